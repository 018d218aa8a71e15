"""A finished run and what it gives: loaded as untrusted input, its scorer over any history,
the batched top-K over unseen items, and the submission file."""
