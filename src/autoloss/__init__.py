"""autoloss: deep recommender training with automated loss-function search (AutoLoss, KDD 2021)."""

__version__ = "0.1.0"
