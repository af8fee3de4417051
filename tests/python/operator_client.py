#!/usr/bin/env python3
"""An independent client of Drover's operator API, written with Python's grpcio and no
code from this repository: it calls /drover.v1.Operator/ListHosts with an empty request,
as raw bytes, over mutual TLS, TLS without a client certificate, or plaintext.

Prints one line and exits:
  OK len=<response bytes>            0   (and, with --expect TEXT, TEXT is in the response)
  MISSING <TEXT>                      3   the call worked but TEXT is not in the response
  ERROR <status code name> <details>  1   the call failed
Used by tests/tests/security.rs; needs `pip install grpcio` (tests/setup.sh does it).
"""

import argparse
import sys

import grpc

METHOD = "/drover.v1.Operator/ListHosts"
# Every Drover controller certificate carries this name, whatever address it listens on.
SERVER_NAME = "controller.drover.internal"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", required=True, help="host:port of the controller")
    p.add_argument("--ca", help="the fleet CA certificate (PEM)")
    p.add_argument("--cert", help="client certificate (PEM); omit for none")
    p.add_argument("--key", help="client private key (PEM)")
    p.add_argument("--plaintext", action="store_true", help="no TLS at all")
    p.add_argument("--expect", help="text the response must contain")
    p.add_argument("--timeout", type=float, default=10.0)
    args = p.parse_args()

    if args.plaintext:
        channel = grpc.insecure_channel(args.target)
    else:
        if not args.ca:
            p.error("--ca is required unless --plaintext")
        with open(args.ca, "rb") as f:
            ca = f.read()
        key = chain = None
        if args.cert:
            with open(args.cert, "rb") as f:
                chain = f.read()
            with open(args.key, "rb") as f:
                key = f.read()
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )
        channel = grpc.secure_channel(
            args.target, creds, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
        )

    call = channel.unary_unary(
        METHOD, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    try:
        response = call(b"", timeout=args.timeout)
    except grpc.RpcError as e:
        details = (e.details() or "").replace("\n", " ")
        print(f"ERROR {e.code().name} {details}")
        return 1
    finally:
        channel.close()
    if args.expect and args.expect.encode() not in response:
        print(f"MISSING {args.expect}")
        return 3
    print(f"OK len={len(response)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
