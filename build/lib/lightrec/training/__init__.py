"""Training one run: the orchestrator (fit -> select -> evaluate -> refit), its two stages
(gradient epochs, one closed-form fit), callbacks, resume, progress and TensorBoard."""
