"""Adding SMTP servers that point at the test sinks, and reading what the sinks received."""
from webapp.extensions import db
from webapp.outgoing.servers import ServerData, create_server
from tests.smtpsinks import PASSWORD, USERNAME, Sink

SECURITY_OF = {"none": "none", "starttls": "starttls", "tls": "tls"}


def server_data(sink: Sink, ca_pem: str | None, **overrides) -> ServerData:
    values = dict(
        name=f"{sink.security} sink", from_address="spacemail@example.org", from_name="${fullname} (Spacemail)",
        subject_prefix="[Spacemail]", host="localhost", port=sink.port, security=sink.security,
        username=USERNAME if sink.auth else "", password=PASSWORD if sink.auth else "", timeout_seconds=3,
        reply_to_policy="actor", trusted_ca_pem=ca_pem or "",
    )
    values.update(overrides)
    return ServerData(**values)


def add_server(sinks, sink: Sink, **overrides):
    """A committed SmtpServer for `sink`, trusting the sinks' CA unless told otherwise."""
    server = create_server(server_data(sink, sinks.ca.cert_pem, **overrides))
    db.session.commit()
    return server


def subjects(sink: Sink) -> list[str]:
    return [m.message["Subject"] for m in sink.messages]
