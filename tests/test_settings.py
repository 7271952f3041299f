"""Settings come from MOODSHIFT_* variables and can be overridden in tests."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.settings import Settings, get_settings


def test_defaults_point_into_checkpoints():
    settings = get_settings()
    assert settings.profile == "auto"
    assert settings.sam_checkpoint_path == Path("checkpoints/sam_vit_h_4b8939.pth")
    assert settings.sdxl_model_path == Path("checkpoints/sdxl-base")
    assert settings.ollama_mood_model == "llava" and settings.ollama_prompt_model == "llama2"


def test_environment_is_read_and_cache_clear_rereads(monkeypatch):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "tiny")
    monkeypatch.setenv("MOODSHIFT_SAM_MODEL_TYPE", "vit_b")
    monkeypatch.setenv("MOODSHIFT_CHECKPOINTS_DIR", "/weights")
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.profile == "tiny"
    assert settings.stage_profile("sam") == "tiny"
    assert settings.sam_checkpoint_path == Path("/weights/sam_vit_b_01ec64.pth")
    monkeypatch.setenv("MOODSHIFT_SAM_PROFILE", "random-full")
    assert get_settings().stage_profile("sam") == "tiny", "cached until cleared"
    get_settings.cache_clear()
    assert get_settings().stage_profile("sam") == "random-full"
    assert get_settings().stage_profile("diffusion") == "tiny"


def test_dotenv_file_is_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("MOODSHIFT_OLLAMA_HOST=http://10.0.0.5:11434\n")
    assert Settings().ollama_host == "http://10.0.0.5:11434"


def test_invalid_value_is_rejected_with_the_field_name(monkeypatch):
    monkeypatch.setenv("MOODSHIFT_PROFILE", "huge")
    with pytest.raises(ValidationError, match="profile"):
        Settings()


def test_explicit_override_wins():
    assert Settings(profile="random-full", sam_model_type="vit_l").sam_checkpoint_path.name == "sam_vit_l_0b3195.pth"
