"""Plain ``nn.Module`` models, one file per task; they run without a Trainer."""

from zoo.models.char_rnn import CharRNN, generate_text

__all__ = ["CharRNN", "generate_text"]
