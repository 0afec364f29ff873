"""``helm test``: send one message with the connection details the pod gets from a connection Secret.

Environment: MTA_HOST, MTA_PORT, MTA_USERNAME, MTA_PASSWORD (from the Secret), MTA_FROM, MTA_TO,
optional MTA_CA_FILE and MTA_TLS_SERVER_NAME (default: MTA_HOST).
"""

from __future__ import annotations

import os
import sys

import aiosmtplib

from .smtp_send import Submission, send, tls_context


def main() -> int:
    env = os.environ
    submission = Submission(
        host=env["MTA_HOST"], port=int(env["MTA_PORT"]), sender=env["MTA_FROM"], recipient=env["MTA_TO"],
        username=env.get("MTA_USERNAME") or None, password=env.get("MTA_PASSWORD") or None,
        tls_context=tls_context(env.get("MTA_CA_FILE") or None, verify=True),
        tls_server_name=env.get("MTA_TLS_SERVER_NAME") or env["MTA_HOST"])
    try:
        reply = send(submission)
    except (aiosmtplib.SMTPException, OSError) as error:
        print(f"test message refused: {error}", file=sys.stderr)
        return 1
    print(f"test message accepted by {submission.host}:{submission.port}: {reply}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
