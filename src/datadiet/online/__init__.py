"""Online filters: decide per example, during training, which ones get compute."""

from .base import BatchView, Decision, OnlineFilter
from .data_diet_dynamic import DataDietDynamic
from .infobatch import InfoBatch
from .loss_threshold import LossThreshold
from .meta_predictor import BernoulliNaiveBayes, MetaPredictor
from .multistage import MultistageMethod
from .random_skip import RandomSkip
from .selective_backprop import SelectiveBackprop

__all__ = ["BatchView", "Decision", "OnlineFilter", "RandomSkip", "InfoBatch", "SelectiveBackprop",
           "LossThreshold", "MetaPredictor", "BernoulliNaiveBayes", "DataDietDynamic",
           "MultistageMethod"]
