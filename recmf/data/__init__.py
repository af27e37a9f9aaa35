"""Data before the model: sources (synthetic, MovieLens, CSV), raw and indexed interactions with
their vocabulary, the split, and the training batches. Imports nothing of recmf above ``errors``."""
