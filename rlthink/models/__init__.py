"""The decoder, its presets, Hugging Face import/export and tokenizers."""

from rlthink.models.config import ModelConfig
from rlthink.models.presets import PRESETS, get_preset
