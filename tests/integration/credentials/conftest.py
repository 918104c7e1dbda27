"""The credentials peers: the grid tools (voms-proxy-init, arcproxy, voms-proxy-info, voms-proxy-fake) and an
SMTP server that receives renew-proxy's alert mails. Fixtures from tests/support/credentials.py."""

from tests.support.credentials import ca, issuer, site, token_endpoint  # noqa: F401  (fixtures)
from tests.support.mail import smtp  # noqa: F401  (fixture)
