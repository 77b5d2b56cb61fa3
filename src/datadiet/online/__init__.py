"""Online filters: decide per example, during training, which ones get compute."""

from ..core.filter import BatchView, Decision, OnlineFilter
from ..methods.data_diet.dynamic import DataDietDynamic
from ..methods.infobatch import InfoBatch
from ..methods.multistage.loss_threshold import LossThreshold
from ..methods.multistage.meta_predictor import BernoulliNaiveBayes, MetaPredictor
from ..methods.multistage.method import MultistageMethod
from ..methods.random_skip import RandomSkip
from ..methods.selective_backprop import SelectiveBackprop

__all__ = ["BatchView", "Decision", "OnlineFilter", "RandomSkip", "InfoBatch", "SelectiveBackprop",
           "LossThreshold", "MetaPredictor", "BernoulliNaiveBayes", "DataDietDynamic",
           "MultistageMethod"]
