"""Plain ``nn.Module`` models, one file per task; they run without a Trainer."""

from zoo.models.captioning import ImageEncoder, ShowAndTell, ShowAttendTell
from zoo.models.char_rnn import CharRNN
from zoo.models.translation import LuongNMT, RNNSearch, Seq2Seq, TranslationModel

__all__ = [
    "CharRNN",
    "ImageEncoder",
    "LuongNMT",
    "RNNSearch",
    "Seq2Seq",
    "ShowAndTell",
    "ShowAttendTell",
    "TranslationModel",
]
