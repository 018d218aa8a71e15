"""Several finished runs made one submission: their validation scores, a blend with weights
chosen on validation, a GBDT re-ranker over their candidates, and the `best` mode that trains
a recipe's members and combines them."""
