"""`lit-sweeps://<folder>` on Hydra's search path: the folder's YAML files form the `sweep` group.

`LitTfSweepsSearchPath` puts `lit-sweeps://sweeps` on lit_tf's search path; a relative folder is
looked up in the current directory first, then next to lit_tf's `conf/` (the repository root).
Another folder of studies: `hydra.searchpath=[lit-sweeps:///abs/path/to/studies]`.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "sweep"


def _folder(path: str) -> Path:
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if (Path.cwd() / p).is_dir():
        return (Path.cwd() / p).resolve()
    from lit_tf.cli.train import CONFIG_DIR

    return (CONFIG_DIR.parent / p).resolve()


class SweepsConfigSource(ConfigSource):
    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)
        self.folder = _folder(self.path)

    @staticmethod
    def scheme() -> str:
        return "lit-sweeps"

    def _file(self, config_path: str) -> Path | None:
        """`sweep/<name>` -> <folder>/<name>.yaml (None for anything outside the group)."""
        head, _, name = config_path.partition("/")
        if head != GROUP or not name:
            return None
        name = name[:-5] if name.endswith(".yaml") else name
        return self.folder / f"{name}.yaml"

    def load_config(self, config_path: str) -> ConfigResult:
        f = self._file(config_path)
        if f is None or not f.is_file():
            raise ConfigLoadError(f"sweep config not found: {f or config_path}")
        text = f.read_text(encoding="utf-8")
        return ConfigResult(config=OmegaConf.create(text) if text.strip() else OmegaConf.create(),
                            path=f"{self.scheme()}://{self.folder}", provider=self.provider,
                            header=ConfigSource._get_header_dict(text[:512]))

    def available(self) -> bool:
        return self.folder.is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        f = self._file(config_path)
        return f is not None and f.is_file()

    def list(self, config_path: str, results_filter: ObjectType | None) -> list[str]:
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) and self.available() else []
        if config_path != GROUP or results_filter == ObjectType.GROUP:
            return []
        return sorted(p.stem for p in self.folder.glob("*.yaml") if not p.name.startswith("_"))

    def __repr__(self) -> str:
        return f"SweepsConfigSource({self.folder})"




class LitTfSweepsSearchPath(SearchPathPlugin):
    """Put the sweeps folder on the search path of lit_tf's own app only (the one whose primary
    config folder is lit_tf's conf/), so `sweep=` is a group for composition and in --help."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from lit_tf.cli.train import CONFIG_DIR

        ours = str(Path(CONFIG_DIR).resolve())
        paths = [e.path or "" for e in search_path.get_path()]
        is_ours = any(p.removeprefix("file://").rstrip("/") == ours for p in paths)  # compose API: no scheme
        if is_ours and not any(p.startswith("lit-sweeps://") for p in paths):
            search_path.append(provider="lit_tf-sweeps", path="lit-sweeps://sweeps")
