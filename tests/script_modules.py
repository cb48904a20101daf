"""Helpers shared by the tests: a script of ``tools/`` or ``datasets/`` loaded as a module (they are not a
package), and datasets a test registered removed from detectron2's global catalogs."""
import importlib.util
from pathlib import Path
from typing import Iterable


def load_script(path, module_name: str):
    """Execute the Python file ``path`` as a fresh module named ``module_name`` and return it (each call
    loads it again: module-level state is not shared between tests that use different names)."""
    spec = importlib.util.spec_from_file_location(module_name, Path(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def forget_datasets(names: Iterable[str]) -> None:
    """Remove ``names`` from ``DatasetCatalog`` and ``MetadataCatalog`` (those registered; others ignored)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
