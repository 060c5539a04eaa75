"""Transformer equality by settings (pyterrier-dr's convention), so ``pt.Experiment(plan="tree")`` runs a shared
prefix once."""


class EqualBySettings:
    """Mixin: ``_settings()`` names what makes an instance what it is."""

    def _settings(self) -> tuple:
        raise NotImplementedError

    def __eq__(self, other):
        return type(other) is type(self) and other._settings() == self._settings()

    def __hash__(self):
        return hash((type(self), self._settings()))
