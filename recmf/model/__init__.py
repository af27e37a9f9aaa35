"""The torch model (``MatrixFactorization``), its losses, and the LightningModule that trains it."""
