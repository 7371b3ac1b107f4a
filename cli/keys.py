"""``imagesearch keys``: API keys, each mapped to a tenant and scopes, stored hashed."""

from __future__ import annotations

import typer

from imagesearch.apikeys import KeyRing
from imagesearch.errors import InvalidInput
from wiring import build_services

app = typer.Typer(help="API keys: each maps to a tenant and scopes; stored hashed.", no_args_is_help=True)


def _keyring() -> KeyRing:
    return build_services().keyring


@app.command("create")
def create(tenant: str = typer.Option(..., help="Tenant whose images this key reads and writes."),
           name: str = typer.Option(..., help="A label, e.g. the client's name."),
           admin: bool = typer.Option(False, help="Also allow operator endpoints (dead letters)."),
           read_only: bool = typer.Option(False, help="Search and read only.")) -> None:
    """Create a key and print it (shown once; only its hash is kept)."""
    scopes = ("read",) if read_only else ("read", "write")
    typer.echo(_keyring().create(name, tenant, scopes + (("admin",) if admin else ())))


@app.command("list")
def list_keys() -> None:
    """Keys by hash prefix, name, tenant and scopes."""
    for key in _keyring().list():
        typer.echo(f"{key.key_hash[:12]}  {key.name:<20} tenant={key.tenant:<16} scopes={','.join(key.scopes)}")


@app.command("revoke")
def revoke(hash_prefix: str = typer.Argument(..., help="The first characters (8+) of the key's hash.")) -> None:
    """Revoke a key; every API process refuses it from the next request on."""
    try:
        typer.echo(f"revoked {_keyring().revoke(hash_prefix)} key(s)")
    except InvalidInput as exc:
        raise typer.BadParameter(str(exc)) from exc
