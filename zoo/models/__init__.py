"""Plain ``nn.Module`` models, one file per task; they run without a Trainer."""

from zoo.models.char_rnn import CharRNN, generate_text
from zoo.models.translation import LuongNMT, RNNSearch, Seq2Seq, TranslationModel

__all__ = ["CharRNN", "LuongNMT", "RNNSearch", "Seq2Seq", "TranslationModel", "generate_text"]
