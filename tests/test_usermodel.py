"""One user-model loader: ``export --model`` and ``verify --model`` take the same references
under the same rules (edgelstm.exporters.usermodel), and refuse the same ones with the same error."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

from edgelstm.errors import ModelDefinitionError, UsageError  # noqa: E402
from edgelstm.exporters.usermodel import build_user_model  # noqa: E402
from edgelstm.verify.backends import load_torch_reference  # noqa: E402

USER = Path(__file__).parent / "user_models"

REFUSED = [
    pytest.param(f"{USER / 'broken_import.py'}:build", ModelDefinitionError,
                 "does not import.*missing_dependency_on_purpose", id="module_does_not_import"),
    pytest.param(f"{USER / 'nope.py'}:build", ModelDefinitionError, "no such Python file", id="missing_file"),
    pytest.param(f"{USER / 'tagger.py'}:nope", ModelDefinitionError, "no callable 'nope'", id="missing_factory"),
    pytest.param(f"{USER / 'tagger.py'}:build_broken", ModelDefinitionError, "factory raised.*failed on purpose",
                 id="factory_raises"),
    # the stricter rule verify's own loader lacked: a factory must return an nn.Module
    pytest.param(f"{USER / 'tagger.py'}:build_not_module", ModelDefinitionError, "did not return an nn.Module",
                 id="factory_not_module"),
    pytest.param("tagger.py", UsageError, "malformed model reference", id="no_factory_name"),
    pytest.param(f"{USER / 'tagger.py'}:not-a-name", UsageError, "malformed model reference", id="bad_factory_name"),
]


@pytest.mark.parametrize("ref,error,match", REFUSED)
def test_export_and_verify_refuse_the_same_model_references(ref, error, match):
    with pytest.raises(error, match=match) as from_export:
        build_user_model(ref)
    with pytest.raises(error, match=match) as from_verify:
        load_torch_reference(model=ref)
    assert str(from_verify.value) == str(from_export.value)


def test_verify_gets_the_model_in_eval_mode():
    module, label = load_torch_reference(model=f"{USER / 'tagger.py'}:build")
    assert not module.training and label == f"torch[{USER / 'tagger.py'}:build]"
    assert re.fullmatch(r"edgelstm_user_model_[0-9a-f]{12}", type(module).__module__)  # export's import of the file
