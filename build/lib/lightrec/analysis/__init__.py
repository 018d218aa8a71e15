"""What people look at: the results table, the notebooks' helpers and the explicit-rating
warm-up."""
