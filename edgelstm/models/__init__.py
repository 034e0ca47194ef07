"""Model families (lstm, peephole, gru, attention), the PeepholeLSTM layer and the registry.

Imports torch. See docs/DESIGN.md for the interface each family offers.
"""
from edgelstm.models.attention import Attention, AttentionClassifier, Seq2Seq
from edgelstm.models.config import SCORES, TASKS, ModelConfig
from edgelstm.models.peephole import PeepholeLSTM
from edgelstm.models.registry import FAMILIES, Family, build_model
from edgelstm.models.sequence import SequenceModel
from edgelstm.tokens import BOS, EOS, PAD  # public here too: the ids every seq2seq model uses

__all__ = ["PeepholeLSTM", "ModelConfig", "build_model", "FAMILIES", "Family", "SequenceModel", "Seq2Seq",
           "AttentionClassifier", "Attention", "TASKS", "SCORES", "PAD", "BOS", "EOS"]
