"""GAN ensembles with real-sample reweighting (Slim 2020, Sec. 5): Algorithm 1 and its transforms
(``reweighting``), sequential training of the members and the per-batch ensemble sampler (``ensemble``)."""
from imbgan_core.ensemble.ensemble import Ensemble, EnsembleGenerator
from imbgan_core.ensemble.reweighting import algorithm1, sampling_probabilities

__all__ = ["Ensemble", "EnsembleGenerator", "algorithm1", "sampling_probabilities"]
