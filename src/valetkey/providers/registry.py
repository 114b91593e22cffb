"""The provider registry: which plug-in handles which connector type.

Providers are discovered from the ``valetkey.providers`` entry-point group. The
built-in ones (``api-key``, ``oauth``) are declared there in Valetkey's own
``pyproject.toml``, exactly as a third-party package would declare its own.
An entry point names a provider class (instantiated with no arguments) or an instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any, ClassVar

from valetkey.core.providers import ConfigField, Provider
from valetkey.errors import InvalidRequest, ValetkeyError

__all__ = ["ENTRY_POINT_GROUP", "ProviderPluginError", "ProviderRegistry"]

ENTRY_POINT_GROUP = "valetkey.providers"
_METHODS = ("capabilities", "validate_config", "user_flows", "mint", "revoke")


class ProviderPluginError(ValetkeyError):
    """A provider plug-in could not be loaded or conflicts with another one."""

    code: ClassVar[str] = "provider_plugin_error"
    status: ClassVar[int] = 500
    remedy: ClassVar[str | None] = (
        "Check the installed packages that declare valetkey.providers entry points."
    )


class ProviderRegistry:
    """Providers by connector type, and the default type for each service."""

    def __init__(self, providers: Iterable[Provider] = ()) -> None:
        self._by_type: dict[str, Provider] = {}
        self._by_service: dict[str, str] = {}
        for provider in providers:
            self.register(provider)

    @classmethod
    def load(cls, group: str = ENTRY_POINT_GROUP) -> ProviderRegistry:
        """Build a registry from every provider installed in the entry-point ``group``."""
        registry = cls()
        for entry_point in sorted(entry_points(group=group), key=lambda ep: ep.name):
            provider = _load(entry_point)
            if provider.type != entry_point.name:
                raise ProviderPluginError(
                    f"entry point {entry_point.name!r} loads a provider of type {provider.type!r}; "
                    "the names must match",
                    entryPoint=entry_point.name,
                )
            registry.register(provider)
        return registry

    def register(self, provider: Provider, *, replace: bool = False) -> None:
        """Add ``provider``; a second one for a type or service is refused unless ``replace``."""
        _check_shape(provider)
        existing = self._by_type.get(provider.type)
        if existing is not None and not replace:
            raise ProviderPluginError(
                f"two providers claim the connector type {provider.type!r}", type=provider.type
            )
        for service in provider.services:
            owner = self._by_service.get(service)
            if owner is not None and owner != provider.type:
                raise ProviderPluginError(
                    f"providers {owner!r} and {provider.type!r} both claim the service {service!r}",
                    service=service,
                )
        if existing is not None:
            for service in existing.services:
                self._by_service.pop(service, None)
        self._by_type[provider.type] = provider
        for service in provider.services:
            self._by_service[service] = provider.type

    def get(self, type: str) -> Provider:
        """The provider for connector ``type``; else ``InvalidRequest`` naming the known types."""
        provider = self._by_type.get(type)
        if provider is None:
            known = self.types()
            raise InvalidRequest(
                f"unknown connector type {type!r}; known types: {', '.join(known) or 'none'}",
                field="type",
                knownTypes=list(known),
            )
        return provider

    def type_for_service(self, service: str) -> str | None:
        """The provider type a service's connectors default to ("api-key" -> "api-key")."""
        return self._by_service.get(service)

    def types(self) -> tuple[str, ...]:
        """Every registered connector type, sorted."""
        return tuple(sorted(self._by_type))

    def __contains__(self, type: object) -> bool:
        return type in self._by_type


def _load(entry_point: EntryPoint) -> Provider:
    try:
        loaded: Any = entry_point.load()
        provider: Any = loaded() if isinstance(loaded, type) else loaded
    except Exception as exc:
        raise ProviderPluginError(
            f"the provider entry point {entry_point.name!r} ({entry_point.value}) failed to load: "
            f"{type(exc).__name__}",
            entryPoint=entry_point.name,
        ) from exc
    _check_shape(provider)
    return provider  # type: ignore[no-any-return]


def _check_shape(provider: object) -> None:
    """Refuse an object that is not a provider, naming what it lacks."""
    kind = getattr(provider, "type", None)
    services = getattr(provider, "services", None)
    if not isinstance(kind, str) or not kind:
        raise ProviderPluginError(f"{provider!r} has no provider type string")
    if not isinstance(services, tuple) or not all(isinstance(s, str) for s in services):
        raise ProviderPluginError(
            f"provider {kind!r}: services must be a tuple of strings", type=kind
        )
    for method in _METHODS:
        if not callable(getattr(provider, method, None)):
            raise ProviderPluginError(f"provider {kind!r} has no {method}()", type=kind)
    fields = getattr(provider, "config_fields", None)
    if not isinstance(fields, tuple) or not all(isinstance(f, ConfigField) for f in fields):
        raise ProviderPluginError(
            f"provider {kind!r}: config_fields must be a tuple of ConfigField "
            "(the configuration fields it accepts)",
            type=kind,
        )
