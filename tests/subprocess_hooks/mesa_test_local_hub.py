"""A local stand-in for the Hub's repository and commit API (each repo is a folder), for tests in this process and,
through `sitecustomize`, in launched subprocesses."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


class LocalHub:
    """`HfApi.create_repo` / `upload_folder` redirected to folders under `root`; with `markers`, every upload also
    writes one file ``upload-rank<RANK>-<id>`` there (counts uploads across processes)."""

    def __init__(self, root: Path, markers: Path | None = None):
        self.root, self.markers, self.created, self.commits = Path(root), markers, [], []

    def create_repo(self, api, repo_id, repo_type=None, private=None, exist_ok=False, **kwargs):
        folder = self.root / repo_id
        if folder.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        self.created.append({"repo_id": repo_id, "repo_type": repo_type, "private": private})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, api, repo_id, folder_path, repo_type=None, commit_message=None, revision=None, **kwargs):
        target = self.root / repo_id
        if not target.is_dir():
            raise FileNotFoundError(f"repository {repo_id} was not created before the upload")
        shutil.copytree(folder_path, target, dirs_exist_ok=True)
        self.commits.append(
            {"repo_id": repo_id, "message": commit_message, "files": sorted(p.name for p in target.iterdir())}
        )
        if self.markers is not None:
            self.markers.mkdir(parents=True, exist_ok=True)
            rank = os.environ.get("RANK", "none")
            (self.markers / f"upload-rank{rank}-{uuid.uuid4().hex[:8]}").write_text(repo_id)
        return f"https://huggingface.co/{repo_id}/commit/{len(self.commits)}"

    def install(self, setattr_=setattr) -> None:
        """Replace the two HfApi methods (`setattr_` may be pytest's ``monkeypatch.setattr``)."""
        from huggingface_hub import HfApi

        setattr_(HfApi, "create_repo", lambda api, *a, **k: self.create_repo(api, *a, **k))
        setattr_(HfApi, "upload_folder", lambda api, *a, **k: self.upload_folder(api, *a, **k))
