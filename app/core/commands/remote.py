"""``quantdesk remote``: OpenAI-compatible servers whose models chat can use.

``remote add NAME URL [--key KEY]`` saves an endpoint (the key in a private
file, never in the settings), ``remote list`` shows them, ``remote models
[NAME]`` lists what they serve (as ``NAME:MODEL``, the form ``quantdesk chat``
takes), ``remote remove NAME`` forgets one.
"""

from __future__ import annotations

import argparse
import sys

from app.core.commands.common import print_json
from app.core.remote import RemoteStore, list_remote_models


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "remote",
        help="models served elsewhere (vLLM, another Quantdesk, llama.cpp's server, …)",
        description="Manage OpenAI-compatible endpoints; their models can be chatted with "
        "as NAME:MODEL ('quantdesk chat NAME:MODEL', or the Chat page).",
    )
    rsub = p.add_subparsers(dest="remote_command", metavar="ACTION")
    add = rsub.add_parser("add", help="add (or change) an endpoint")
    add.add_argument("name", metavar="NAME")
    add.add_argument("url", metavar="URL", help="base URL, e.g. http://gpu-box:8000/v1")
    add.add_argument("--key", metavar="KEY", help="API key (stored privately, never logged)")
    add.add_argument(
        "--no-check", action="store_true", help="save without asking the server for its models"
    )
    add.set_defaults(func=_add)
    lst = rsub.add_parser("list", help="the saved endpoints")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_list)
    models = rsub.add_parser("models", help="the models the endpoints serve")
    models.add_argument("name", metavar="NAME", nargs="?", help="one endpoint (default: all)")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=_models)
    rm = rsub.add_parser("remove", help="forget an endpoint and its key")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(func=_remove)

    def usage(_args: argparse.Namespace) -> int:
        p.print_help()
        return 2

    p.set_defaults(func=usage)


def _add(args: argparse.Namespace) -> int:
    store = RemoteStore()
    remote = store.add(args.name, args.url, args.key)
    print(f"{remote.name}: {remote.url}" + (" (with an API key)" if remote.has_key else ""))
    if not args.no_check:
        models = store.client(remote.name).models()
        print(f"serves {len(models)} model{'s' if len(models) != 1 else ''}:")
        for m in models:
            print(f"  {m.ref}")
    return 0


def _list(args: argparse.Namespace) -> int:
    remotes = RemoteStore().list()
    if args.json:
        print_json([r.to_dict() for r in remotes])
        return 0
    if not remotes:
        print("no remotes yet; add one with 'quantdesk remote add NAME URL'", file=sys.stderr)
    for r in remotes:
        print(f"{r.name}\t{r.url}" + ("\t(key)" if r.has_key else ""))
    return 0


def _models(args: argparse.Namespace) -> int:
    store = RemoteStore()
    models = store.client(args.name).models() if args.name else list_remote_models(store)
    if args.json:
        print_json([m.to_dict() for m in models])
        return 0
    for m in models:
        print(m.ref)
    return 0


def _remove(args: argparse.Namespace) -> int:
    if not RemoteStore().remove(args.name):
        print(f"there is no remote called {args.name!r}", file=sys.stderr)
        return 2
    return 0
