#!/usr/bin/env python3
"""Make an API key: print the salted hash that goes into the gateway's configuration.

  hash_api_key.py --id acme-1 --tenant acme
      generates a new key `acme-1.<random secret>`; prints the key once on stderr (hand it to
      the client) and the key entry for RAG_AUTH__KEYS / RAG_AUTH__KEYS_FILE on stdout
  hash_api_key.py --id acme-1 --tenant acme --stdin
      hashes a key you already have (`<id>.<secret>`, read from stdin, never from argv)

Only the hash is ever configured; the gateway cannot recover the key from it. Every run uses a
fresh random salt, so hashing the same key twice gives two different (both valid) hashes.
"""

from __future__ import annotations

import argparse
import json
import sys

from app.apikeys import DEFAULT_N, KEY_ID_RE, KeyHash, hash_token, new_token, split_token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--id", required=True, help="key id (A-Z a-z 0-9 _ -, at most 64): names the key")
    parser.add_argument("--tenant", help="tenant of the key (omit to print only the hash)")
    parser.add_argument("--admin", action="store_true", help="the key may manage /documents")
    parser.add_argument("--rate-limit", type=int, help="requests per rate window for this key")
    parser.add_argument(
        "--stdin", action="store_true", help="read the key from stdin instead of generating one"
    )
    parser.add_argument(
        "--n", type=int, default=DEFAULT_N, help=f"scrypt cost, a power of two (default {DEFAULT_N})"
    )
    args = parser.parse_args(argv)
    if not KEY_ID_RE.match(args.id):
        parser.error("--id must be 1..64 of A-Z a-z 0-9 _ -")

    if args.stdin:
        token = sys.stdin.readline().strip()
        parts = split_token(token)
        if parts is None or parts[0] != args.id:
            parser.error(f"the key must look like `{args.id}.<secret of at least 16 characters>`")
    else:
        token = new_token(args.id)
    hashed = hash_token(token, n=args.n)
    assert KeyHash.parse(hashed).verify(token)

    if not args.stdin:
        print(f"API key (shown once, give it to the client): {token}", file=sys.stderr)
    if args.tenant is None:
        print(hashed)
        return 0
    entry: dict[str, object] = {"id": args.id, "tenant": args.tenant, "hash": hashed, "admin": args.admin}
    if args.rate_limit is not None:
        entry["rate_limit"] = args.rate_limit
    print(json.dumps(entry))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
