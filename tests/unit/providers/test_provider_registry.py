"""The provider registry: entry-point discovery, lookup by type and by service."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from valetkey.errors import InvalidRequest
from valetkey.providers.api_key import ApiKeyProvider
from valetkey.providers.oauth import OAuthProvider
from valetkey.providers.registry import ProviderPluginError, ProviderRegistry


class _Custom(ApiKeyProvider):
    type: ClassVar[str] = "custom"
    services: ClassVar[tuple[str, ...]] = ("custom.example", "other.example")


def test_load_discovers_the_builtin_providers_through_entry_points() -> None:
    """The built-ins are found through the valetkey.providers group, like any plug-in."""
    registry = ProviderRegistry.load()
    assert {"api-key", "oauth"} <= set(registry.types())
    assert isinstance(registry.get("api-key"), ApiKeyProvider)
    assert isinstance(registry.get("oauth"), OAuthProvider)


def test_load_of_an_empty_group_gives_an_empty_registry() -> None:
    """A group nobody declares yields no providers rather than an error."""
    assert ProviderRegistry.load("valetkey.no-such-group").types() == ()


def test_get_unknown_type_names_the_known_types() -> None:
    """An unknown connector type is refused with the list of types that exist."""
    registry = ProviderRegistry([ApiKeyProvider(), OAuthProvider()])
    with pytest.raises(InvalidRequest) as caught:
        registry.get("carrier-pigeon")
    assert caught.value.details["knownTypes"] == ["api-key", "oauth"]
    assert "api-key, oauth" in caught.value.message
    assert caught.value.details["field"] == "type"


def test_type_for_service_maps_default_services() -> None:
    """Each provider's services map to its type; other services map to nothing."""
    registry = ProviderRegistry.load()
    assert registry.type_for_service("api-key") == "api-key"
    assert registry.type_for_service("oauth") == "oauth"
    assert registry.type_for_service("slack") is None


def test_register_adds_a_plugin_and_its_services() -> None:
    """A provider registered at run time is found by type and by each of its services."""
    registry = ProviderRegistry()
    registry.register(_Custom())
    assert registry.types() == ("custom",)
    assert registry.type_for_service("other.example") == "custom"
    assert "custom" in registry


def test_register_refuses_a_second_provider_for_a_type() -> None:
    """Two plug-ins claiming one connector type is a conflict, unless replacing on purpose."""
    registry = ProviderRegistry([_Custom()])
    with pytest.raises(ProviderPluginError):
        registry.register(_Custom())
    replacement = _Custom()
    registry.register(replacement, replace=True)
    assert registry.get("custom") is replacement


def test_register_refuses_a_service_claimed_by_another_type() -> None:
    """A service can default to one provider type only."""
    registry = ProviderRegistry([ApiKeyProvider()])

    class Thief(_Custom):
        type: ClassVar[str] = "thief"
        services: ClassVar[tuple[str, ...]] = ("api-key",)

    with pytest.raises(ProviderPluginError) as caught:
        registry.register(Thief())
    assert caught.value.details["service"] == "api-key"


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("type", ""),
        ("services", ["list"]),
        ("mint", None),
        ("user_flows", None),
        ("config_fields", ["apiKey"]),
    ],
)
def test_register_refuses_objects_that_are_not_providers(attribute: str, value: Any) -> None:
    """Something missing a type, a services tuple, an operation or its declaration of user flows
    is refused at registration."""
    provider = _Custom()
    object.__setattr__(provider, attribute, value)
    with pytest.raises(ProviderPluginError):
        ProviderRegistry().register(provider)


def _install_plugin(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """Make a distribution declaring ``entry_points`` importable, as pip would install it."""
    dist = tmp_path / "valetkey_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: valetkey-test-plugin\nVersion: 1.0\n"
    )
    (dist / "entry_points.txt").write_text(f"[valetkey.test-providers]\n{entry_points}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_load_finds_a_third_party_plugin(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution's entry point is loaded the same way as the built-ins."""
    _install_plugin(tmp_path, monkeypatch, "api-key = valetkey.providers.api_key:ApiKeyProvider")
    registry = ProviderRegistry.load("valetkey.test-providers")
    assert registry.types() == ("api-key",)


def test_load_refuses_an_entry_point_that_fails_to_import(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A broken plug-in stops the load with an error naming the entry point."""
    _install_plugin(tmp_path, monkeypatch, "broken = valetkey.providers.no_such_module:Nope")
    with pytest.raises(ProviderPluginError) as caught:
        ProviderRegistry.load("valetkey.test-providers")
    assert caught.value.details["entryPoint"] == "broken"


def test_load_refuses_an_entry_point_named_unlike_its_type(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry-point name must be the provider's type, so configuration and code agree."""
    _install_plugin(tmp_path, monkeypatch, "keys = valetkey.providers.api_key:ApiKeyProvider")
    with pytest.raises(ProviderPluginError) as caught:
        ProviderRegistry.load("valetkey.test-providers")
    assert caught.value.details["entryPoint"] == "keys"
