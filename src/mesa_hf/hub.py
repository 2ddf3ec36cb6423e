"""Writing checkpoints for sharing: safetensors weights, config, image processor, modelling code and `auto_map`."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedModel

from .configuration_mesa import MeSaConfig
from .image_processing_mesa import MeSaImageProcessor

# Auto class under which each MeSa class is written into `auto_map`.
AUTO_CLASS_OF = {
    "MeSaForDepthEstimation": "AutoModelForDepthEstimation",
    "MeSaForMaskedImageModeling": "AutoModelForMaskedImageModeling",
    "MeSaForSelfSupervisedDepth": "AutoModel",
}


@contextmanager
def remote_code_registration(model: PreTrainedModel, image_processor: MeSaImageProcessor | None = None):
    """Within the context, `save_pretrained` also copies the modelling code and writes `auto_map`.

    Registration is undone on exit so ordinary checkpoints stay plain (no remote-code prompt on load).
    """
    classes = [type(model), MeSaConfig] + ([type(image_processor)] if image_processor is not None else [])
    previous = {cls: cls.__dict__.get("_auto_class") for cls in classes}
    try:
        MeSaConfig.register_for_auto_class()
        type(model).register_for_auto_class(AUTO_CLASS_OF.get(type(model).__name__, "AutoModel"))
        if image_processor is not None:
            type(image_processor).register_for_auto_class("AutoImageProcessor")
        yield
    finally:
        for cls, value in previous.items():
            if value is None:
                if "_auto_class" in cls.__dict__:
                    delattr(cls, "_auto_class")
            else:
                cls._auto_class = value


def replace_directory(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a finished temporary folder to `final`, replacing an older folder of that name only once it is complete.

    The older folder is parked beside `tmp` (its name plus ``.old``) and removed afterwards, so a crash leaves either
    the old or the new folder in place, never a half-written one.
    """
    tmp, final = Path(tmp), Path(final)
    if final.exists():
        old = tmp.with_name(f"{tmp.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def atomic_save_pretrained(save, directory: str | os.PathLike) -> Path:
    """Call `save(tmp_dir)` in a sibling temporary folder, then move it into place: never a half-written folder.

    An existing `directory` is replaced only after the new one is complete.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        save(tmp)
        replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


# Files of a MeSa checkpoint fetched for a Hub id: weights, configs, modelling code, model card.
CHECKPOINT_FILE_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.md"]


def resolve_checkpoint(checkpoint: str | os.PathLike, revision: str | None = None) -> Path:
    """The folder of a checkpoint given as a local folder or a Hub model id (``org/name``).

    A Hub id resolves through `huggingface_hub.snapshot_download`: from the Hugging Face cache when offline
    (``HF_HUB_OFFLINE=1``) or when the Hub cannot be reached, downloaded otherwise. Raises `FileNotFoundError` with
    one line saying where the checkpoint was looked for and how to get it.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    path = Path(checkpoint)
    if path.is_dir():
        return path
    repo_id = os.fspath(checkpoint)
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"checkpoint folder not found: {path}") from None
    where = f"not a local folder, and not a model in the Hugging Face cache ({constants.HF_HUB_CACHE})"
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_FILE_PATTERNS))
    except RevisionNotFoundError:
        raise FileNotFoundError(f"checkpoint {repo_id!r}: the Hub repository has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(
            f"checkpoint {repo_id!r} not found: {where} nor on the Hub (for a private or gated model log in first: "
            "`hf auth login`)"
        ) from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise FileNotFoundError(
                f"checkpoint {repo_id!r} not found: {where}; HF_HUB_OFFLINE is set, so it was not downloaded "
                f"(run `hf download {repo_id}` online, or unset HF_HUB_OFFLINE)"
            ) from None
        raise FileNotFoundError(
            f"checkpoint {repo_id!r} not found: {where}, and the Hub could not be reached (check the connection, "
            f"or run `hf download {repo_id}` where there is one)"
        ) from None


METRIC_NAMES = {"abs_rel": "AbsRel", "rmse": "RMSE", "log10": "log10", "d1": "δ1", "d2": "δ2", "d3": "δ3"}


def model_card_template_path() -> Path:
    """The model card template: shipped inside the wheel, or `model_card.md` at the root of a source checkout."""
    for candidate in (Path(__file__).with_name("model_card.md"), Path(__file__).resolve().parents[2] / "model_card.md"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("model_card.md template not found beside mesa_hf or at the repository root")


def build_model_card(
    model: PreTrainedModel,
    *,
    model_id: str,
    repo_id: str | None = None,
    image_processor: MeSaImageProcessor | None = None,
    preset: str | None = None,
    stages: list[dict] | None = None,
    results: list[dict] | None = None,
    baselines: list[dict] | None = None,
    datasets: list[str] | None = None,
    base_model: str | None = None,
    remote_code: bool = True,
) -> ModelCard:
    """Fill `model_card.md` for a MeSa checkpoint.

    `stages`: dicts with name, objective, data, steps, notes (one per training stage, in order).
    `results`: dicts with dataset, protocol (a sentence naming crop, range, scaling and TTA) and the metrics
    abs_rel, rmse, log10, d1, d2, d3: the model's own results; they also become `model-index` metadata (Hub
    evaluation results).
    `baselines`: rows of the same form for references that are not this model (e.g. the average training depth
    map), with an optional ``name`` (default: ``dataset``); they go in a table in the card's text only, so the Hub
    never reads them as the model's results.
    """
    config = model.config
    backbone = config.backbone_config
    processor = image_processor or MeSaImageProcessor()
    results = results or []
    eval_results = [
        EvalResult(
            task_type="depth-estimation",
            dataset_type=r.get("dataset_type", r["dataset"].lower()),
            dataset_name=r["dataset"],
            metric_type=metric,
            metric_name=f"{name} ({r['protocol']})",
            metric_value=float(r[metric]),
        )
        for r in results
        for metric, name in METRIC_NAMES.items()
        if metric in r
    ]
    card_data = ModelCardData(
        model_name=model_id,
        library_name="transformers",
        pipeline_tag="depth-estimation",
        license="apache-2.0",
        tags=["depth-estimation", "monocular-depth", "mesa", "swinv2", "mesa-hf"],
        datasets=datasets,
        base_model=base_model,
        eval_results=eval_results or None,
    )
    decoder = "MIM-Depth deconvolution" if config.decoder_type == "mim" else "multi-scale (FPN-style)"
    formatted = [_format_row(r) for r in results]
    references = [{"name": r.get("name", r.get("dataset", "")), **_format_row(r)} for r in baselines or []]
    return ModelCard.from_template(
        card_data,
        template_path=str(model_card_template_path()),
        model_id=model_id,
        repo_id=repo_id or model_id,
        preset=preset,
        embed_dim=backbone.embed_dim,
        depths=list(backbone.depths),
        num_heads=list(backbone.num_heads),
        window_size=backbone.window_size,
        pretrained_window_sizes=list(backbone.pretrained_window_sizes),
        decoder_description=decoder,
        num_parameters=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f} M",
        min_depth=config.min_depth,
        max_depth=config.max_depth,
        processor_size=f"{processor.size['height']}×{processor.size['width']}",
        trust_remote_code_arg=", trust_remote_code=True" if remote_code else "",
        stages=stages or [],
        results=formatted,
        baselines=references,
    )


def _format_row(row: dict) -> dict:
    return {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}


def save_for_sharing(
    model: PreTrainedModel,
    image_processor: MeSaImageProcessor | None,
    directory: str | os.PathLike,
    model_card: ModelCard | None = None,
) -> Path:
    """Write a self-contained checkpoint folder (atomically) that loads where mesa_hf is not installed.

    The folder holds `model.safetensors`, `config.json` and `preprocessor_config.json` with `auto_map`, and the
    flat modelling files, so `AutoModelForDepthEstimation.from_pretrained(dir, trust_remote_code=True)` and
    `pipeline("depth-estimation", model=dir, trust_remote_code=True)` work anywhere transformers is installed.
    `model_card` (from `build_model_card`) is written as README.md.
    """
    image_processor = image_processor if image_processor is not None else MeSaImageProcessor()

    def save(folder: Path) -> None:
        with remote_code_registration(model, image_processor):
            model.save_pretrained(folder)
            image_processor.save_pretrained(folder)
        if model_card is not None:
            model_card.save(folder / "README.md")

    return atomic_save_pretrained(save, directory)


def push_to_hub(
    model: PreTrainedModel,
    image_processor: MeSaImageProcessor | None,
    repo_id: str,
    *,
    model_card: ModelCard | None = None,
    extra_files: dict[str, str | os.PathLike] | None = None,
    commit_message: str = "Upload MeSa checkpoint (mesa-hf)",
    private: bool | None = None,
    token: str | None = None,
    revision: str | None = None,
) -> str:
    """Write a shareable folder (`save_for_sharing`: safetensors, config, processor, modelling code, model card as
    README.md) and upload it to the Hub repository `repo_id` (created when missing) in one commit.

    `extra_files` maps names inside the repository to local files (e.g. ``stage_results.json``). This is the one
    function the training scripts call for `--push_to_hub`; it talks to the Hub only through
    `huggingface_hub.HfApi.create_repo` and `HfApi.upload_folder`. Returns the URL of the commit.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="mesa-push-") as tmp:
        folder = save_for_sharing(model, image_processor, Path(tmp) / "checkpoint", model_card=model_card)
        for name, source in (extra_files or {}).items():
            shutil.copy2(source, folder / name)
        api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="model",
            folder_path=str(folder),
            commit_message=commit_message,
            revision=revision,
        )
    return str(getattr(commit, "commit_url", commit))


__all__ = [
    "atomic_save_pretrained",
    "build_model_card",
    "model_card_template_path",
    "push_to_hub",
    "remote_code_registration",
    "replace_directory",
    "resolve_checkpoint",
    "save_for_sharing",
]
