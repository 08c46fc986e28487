"""Model folders, the GGUF files in them, and `--model NAME` resolution."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List

import pytest

from tests.unit.test_gguf_metadata import write_gguf
from tools.llama_bench import settings
from tools.llama_bench.models import catalog
from tools.llama_bench.models.catalog import find_models, hf_hub_cache, llama_cpp_cache, model_dirs, resolve_model_name
from tools.llama_bench.utils import UserError


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """No real caches, .env, repo models or huggingface_hub: each test builds the folders it means."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("LLAMA_MODEL_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "LLAMA_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(settings, "_dotenv_cache", {})
    monkeypatch.setattr(catalog, "REPO_DIR", tmp_path / "repo")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def hub_model(hub: Path, repo: str, filename: str, revisions: List[str]) -> List[Path]:
    """huggingface_hub's layout: blobs/<hash> holds the file, snapshots/<rev>/<name> symlinks to it."""
    folder = hub / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True)
    (hub / ".locks").mkdir(exist_ok=True)
    blob = folder / "blobs" / "5f2a9c"
    write_gguf(blob.with_suffix(".tmp.gguf"))
    blob.with_suffix(".tmp.gguf").rename(blob)
    links = []
    for rev in revisions:
        snap = folder / "snapshots" / rev
        snap.mkdir(parents=True)
        os.symlink(os.path.relpath(blob, snap), snap / filename)
        links.append(snap / filename)
    return links


# --- folders -----------------------------------------------------------------------------------------


def test_folders_in_order_flags_env_cwd_repo_hub_llama_cache(tmp_path, isolated_home, monkeypatch):
    flag, env1, env2 = tmp_path / "flag", tmp_path / "env1", tmp_path / "env2"
    for d in (flag, env1, env2, tmp_path / "work" / "models", tmp_path / "repo" / "models"):
        d.mkdir(parents=True)
    hub = isolated_home / ".cache" / "huggingface" / "hub"
    llama = isolated_home / ".cache" / "llama.cpp"
    hub.mkdir(parents=True)
    llama.mkdir(parents=True)
    monkeypatch.setenv("LLAMA_MODEL_DIR", f"{env1}{os.pathsep}{env2}")
    assert model_dirs([flag]) == [
        flag,
        env1,
        env2,
        tmp_path / "work" / "models",
        tmp_path / "repo" / "models",
        hub,
        llama,
    ]


def test_model_dir_setting_comes_from_dotenv_too(tmp_path, monkeypatch):
    (tmp_path / "fromdotenv").mkdir()
    monkeypatch.setattr(settings, "_dotenv_cache", {"LLAMA_MODEL_DIR": str(tmp_path / "fromdotenv")})
    assert model_dirs() == [tmp_path / "fromdotenv"]


def test_missing_implicit_folders_are_skipped_and_duplicates_listed_once(tmp_path, monkeypatch):
    models = tmp_path / "work" / "models"
    models.mkdir()
    monkeypatch.setenv("LLAMA_MODEL_DIR", f"{models}{os.pathsep}{tmp_path / 'absent'}")
    assert model_dirs([models]) == [models]


def test_a_model_dir_flag_must_exist(tmp_path):
    with pytest.raises(UserError, match="--model-dir .*nowhere: no such folder"):
        model_dirs([tmp_path / "nowhere"])


def test_cache_folders_follow_the_environment(tmp_path, isolated_home, monkeypatch):
    assert hf_hub_cache() == isolated_home / ".cache" / "huggingface" / "hub"
    assert llama_cpp_cache() == isolated_home / ".cache" / "llama.cpp"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_hub_cache() == tmp_path / "xdg" / "huggingface" / "hub"
    assert llama_cpp_cache() == tmp_path / "xdg" / "llama.cpp"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    assert hf_hub_cache() == tmp_path / "hfhome" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hubcache"))
    assert hf_hub_cache() == tmp_path / "hubcache"
    monkeypatch.setenv("LLAMA_CACHE", str(tmp_path / "llamacache"))
    assert llama_cpp_cache() == tmp_path / "llamacache"


def test_huggingface_hub_constant_is_used_when_installed(tmp_path, monkeypatch):
    import types

    hub = types.ModuleType("huggingface_hub")
    hub.constants = types.SimpleNamespace(HF_HUB_CACHE=str(tmp_path / "from-constants"))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    assert hf_hub_cache() == tmp_path / "from-constants"


# --- listing -----------------------------------------------------------------------------------------


def test_hub_snapshots_are_listed_by_their_snapshot_path_once_per_blob(isolated_home):
    hub = isolated_home / ".cache" / "huggingface" / "hub"
    links = hub_model(hub, "org/Tiny-GGUF", "tiny.Q8_0.gguf", ["rev1", "rev2"])
    entries = find_models(model_dirs())
    assert [e.path for e in entries] == [str(links[0])]
    [entry] = entries
    assert entry.info is not None and entry.info.architecture == "llama" and entry.error is None
    assert entry.folder == str(hub) and entry.name == "tiny.Q8_0.gguf"


def test_listing_survives_bad_files_and_says_why(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_gguf(folder / "good.gguf")
    (folder / "broken.gguf").write_bytes(b"<html>404</html>")
    good_bytes = (folder / "good.gguf").read_bytes()
    (folder / "cut.gguf").write_bytes(good_bytes[:-4000])
    (folder / "downloading.gguf.partial").write_bytes(good_bytes[:100])
    (folder / "notes.txt").write_text("not a model", encoding="utf-8")
    entries = {e.name: e for e in find_models([folder])}
    assert sorted(entries) == ["broken.gguf", "cut.gguf", "good.gguf"]
    assert entries["good.gguf"].info is not None and entries["good.gguf"].error is None
    assert entries["broken.gguf"].info is None and "is not a GGUF file" in (entries["broken.gguf"].error or "")
    assert "truncated" in (entries["cut.gguf"].error or "")
    assert entries["cut.gguf"].size_bytes == len(good_bytes) - 4000


def test_split_parts_are_one_model_and_a_missing_part_is_its_error(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    parts = write_gguf(folder / "big.gguf", split_max_tensors=4)
    other = write_gguf(folder / "gap.gguf", split_max_tensors=4)
    other[1].unlink()
    entries = {e.name: e for e in find_models([folder])}
    assert sorted(entries) == ["big-00001-of-00003.gguf", "gap-00001-of-00003.gguf"]
    big = entries["big-00001-of-00003.gguf"]
    assert big.files == [str(p) for p in parts] and big.size_bytes == sum(p.stat().st_size for p in parts)
    assert big.info is not None and big.info.tensor_count == 10
    assert "missing gap-00002-of-00003.gguf" in (entries["gap-00001-of-00003.gguf"].error or "")


def test_multimodal_projectors_are_marked(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    write_gguf(folder / "llava.gguf")
    write_gguf(folder / "mmproj-llava-f16.gguf")
    write_gguf(folder / "projector.gguf", arch="clip")
    marks = {e.name: e.is_mmproj for e in find_models([folder])}
    assert marks == {"llava.gguf": False, "mmproj-llava-f16.gguf": True, "projector.gguf": True}


def test_nested_folders_are_searched_but_hidden_ones_are_not(tmp_path):
    folder = tmp_path / "m"
    (folder / "family" / "size").mkdir(parents=True)
    (folder / ".trash").mkdir()
    write_gguf(folder / "family" / "size" / "deep.gguf")
    write_gguf(folder / ".trash" / "old.gguf")
    assert [e.name for e in find_models([folder])] == ["deep.gguf"]


# --- names -------------------------------------------------------------------------------------------


@pytest.fixture
def shelf(tmp_path) -> Path:
    folder = tmp_path / "shelf"
    folder.mkdir()
    for name in ("Qwen2.5-7B-Instruct-Q4_K_M.gguf", "qwen2.5-7b-instruct-q8_0.gguf", "tiny.gguf", "tiny-chat.gguf"):
        (folder / name).write_bytes(b"GGUF")  # resolution looks at names only
    write_gguf(folder / "llama-70b.gguf", split_max_tensors=4)
    (folder / "mmproj-tiny.gguf").write_bytes(b"GGUF")
    return folder


def test_an_existing_path_wins(tmp_path, shelf):
    (tmp_path / "work" / "tiny").write_bytes(b"GGUF")  # a file named like a model in the shelf
    assert resolve_model_name("tiny", [shelf]) == str(tmp_path / "work" / "tiny")
    assert resolve_model_name(str(shelf / "tiny-chat.gguf"), [shelf]) == str(shelf / "tiny-chat.gguf")


def test_exact_file_name_and_stem_beat_substrings(shelf):
    assert resolve_model_name("tiny.gguf", [shelf]) == str(shelf / "tiny.gguf")
    assert resolve_model_name("tiny", [shelf]) == str(shelf / "tiny.gguf")  # not tiny-chat, not mmproj-tiny
    assert resolve_model_name("TINY-CHAT", [shelf]) == str(shelf / "tiny-chat.gguf")


def test_unique_substring_case_insensitive(shelf):
    assert resolve_model_name("q8_0", [shelf]) == str(shelf / "qwen2.5-7b-instruct-q8_0.gguf")


def test_split_model_is_found_by_its_name_and_resolves_to_the_first_part(shelf):
    assert resolve_model_name("llama-70b", [shelf]) == str(shelf / "llama-70b-00001-of-00003.gguf")


def test_ambiguity_lists_the_candidates(shelf):
    with pytest.raises(UserError) as caught:
        resolve_model_name("qwen2.5", [shelf])
    message = str(caught.value)
    assert "ambiguous, 2 models match" in message and "\n" not in message
    assert str(shelf / "Qwen2.5-7B-Instruct-Q4_K_M.gguf") in message
    assert str(shelf / "qwen2.5-7b-instruct-q8_0.gguf") in message


def test_projectors_only_when_asked_for(shelf):
    assert resolve_model_name("mmproj", [shelf]) == str(shelf / "mmproj-tiny.gguf")


def test_no_match_names_the_folders_searched(tmp_path, shelf):
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(UserError) as caught:
        resolve_model_name("mistral", [shelf, other])
    message = str(caught.value)
    assert "no model matches 'mistral'" in message
    assert f"searched {shelf}, {other}" in message and "--model-dir" in message


def test_a_missing_path_is_not_searched_for(shelf):
    with pytest.raises(UserError, match="model file not found"):
        resolve_model_name("some/dir/tiny.gguf", [shelf])
