"""The modules that moved in 0.2, still importable under their 0.1 names for one release.

`import kbn.sgd` gives `kbn.optim.sgd` with a `DeprecationWarning` that names
the new place; the alias goes in kbn 0.3 (CHANGELOG.md lists the
moves). An import hook, not a file per old name, so that the package's tree
shows only where things are now.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

MOVED = {
    "kbn.layers": "kbn.nn",
    "kbn.model": "kbn.nn.builder",
    "kbn.preprocessing": "kbn.nn.preprocessing",
    "kbn.precision": "kbn.nn.precision",
    "kbn.sgd": "kbn.optim.sgd",
    "kbn.schedules": "kbn.optim.schedules",
    "kbn.config": "kbn.training.config",
    "kbn.loop": "kbn.training.loop",
    "kbn.callbacks": "kbn.training.callbacks",
    "kbn.backup": "kbn.training.callbacks.backup",
    "kbn.hparams": "kbn.training.hparams",
    "kbn.distribute": "kbn.training.distribute",
    "kbn.runlock": "kbn.training.runlock",
    "kbn.presets": "kbn.training.presets",
    "kbn.evaluate": "kbn.inference.evaluate",
    "kbn.predict": "kbn.inference.predict",
    "kbn.export": "kbn.inference.export",
    "kbn.numpy_reference": "kbn.bench.numpy_reference",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name and loads it as the module that now holds it."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new} in kbn 0.2; the old name goes in kbn 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._spec = module.__spec__  # the import system overwrites it with the alias's
        return module

    def exec_module(self, module):
        module.__spec__ = self._spec  # the module stays what it is under its new name


def install():
    """Put the finder on `sys.meta_path`, once."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
