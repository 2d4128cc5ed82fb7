"""Runs ON THE HOST as root (`sudo python3 - SPEC`): can Nginx serve this certificate and key?

SPEC is JSON: {"cert": TLS_CERT, "key": TLS_KEY, "names": [server names]}. Checks, with the
`openssl` command, that both files exist and can be read (as root, as Nginx's master reads them),
that the key is the certificate's (same public key), that the certificate covers every name
(subjectAltName, else the subject's CN; `*.example.com` covers one label) and when it expires.
Prints one JSON line: {"problems": [...], "days_left": float or null, "not_after": str, "names":
[...]}. The key's content never leaves the host: only whether its public half matches. Standard
library only, Python 3.8+.
"""

import calendar
import json
import re
import subprocess
import sys
import time


def openssl(*args):
    done = subprocess.run(
        ["openssl", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    return done.returncode, done.stdout, done.stderr.strip()


def readable(path):
    try:
        with open(path, "rb") as fh:
            fh.read(1)
        return ""
    except OSError as err:
        return err.strerror or str(err)


def cert_names(cert):
    _, text, _ = openssl("x509", "-in", cert, "-noout", "-text")
    san = re.search(r"X509v3 Subject Alternative Name:[^\n]*\n\s*([^\n]+)", text)
    if san:
        return [part.split(":", 1)[1].strip() for part in san.group(1).split(",") if ":" in part]
    cn = re.search(r"Subject:.*?CN\s*=\s*([^,/\n]+)", text)
    return [cn.group(1).strip()] if cn else []


def covers(pattern, name):
    pattern, name = pattern.lower().rstrip("."), name.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in name and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


def expiry(cert):
    _, out, _ = openssl("x509", "-in", cert, "-noout", "-enddate")
    value = out.strip().partition("=")[2]
    try:
        return value, calendar.timegm(
            time.strptime(value.replace("  ", " "), "%b %d %H:%M:%S %Y %Z")
        )
    except ValueError:
        return value, None


def check(spec):
    cert, key, problems = spec["cert"], spec["key"], []
    for label, path in (("TLS_CERT", cert), ("TLS_KEY", key)):
        why = readable(path)
        if why:
            problems.append(
                f"{label} {path} cannot be read as root (Nginx's master reads it): {why}"
            )
    if problems:
        return {"problems": problems, "days_left": None, "not_after": "", "names": []}
    code, cert_pub, err = openssl("x509", "-in", cert, "-noout", "-pubkey")
    if code != 0:
        return {
            "problems": [f"TLS_CERT {cert} is not a PEM certificate: {err}"],
            "days_left": None,
            "not_after": "",
            "names": [],
        }
    code, key_pub, err = openssl("pkey", "-in", key, "-pubout")
    if code != 0:
        problems.append(
            "TLS_KEY {} is not a PEM private key (or is encrypted): {}".format(
                key, err.splitlines()[0] if err else ""
            )
        )
    elif key_pub.strip() != cert_pub.strip():
        problems.append(
            f"TLS_KEY {key} does not match TLS_CERT {cert}: the key is not the certificate's"
        )
    names = cert_names(cert)
    for wanted in spec["names"]:
        if not any(covers(p, wanted) for p in names):
            problems.append(
                "TLS_CERT {} does not cover SERVER_NAME {} (it names {})".format(
                    cert, wanted, ", ".join(names) or "nothing"
                )
            )
    not_after, end = expiry(cert)
    days = None if end is None else round((end - time.time()) / 86400, 1)
    if days is not None and days <= 0:
        problems.append(f"TLS_CERT {cert} expired on {not_after}")
    return {"problems": problems, "days_left": days, "not_after": not_after, "names": names}


def main(argv):
    print(json.dumps(check(json.loads(argv[0]))))


if __name__ == "__main__":
    main(sys.argv[1:])
