"""The replies the relay gives, in one place: SMTP text, and the reason key HTTP and metrics use.

The rows of the design's reply table are fixed wording; clients and tests match on them. Every refusal
carries an RFC 3463 enhanced status code and says what to fix; aiosmtpd's stock replies never reach a
client (``smtp_session`` maps each one onto a reply here, and a test holds that map to aiosmtpd's source).
``reason`` is the bounded metrics label and the ``reason`` of the log line every refusal gets.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str
    reason: str  # bounded metrics label and HTTP JSON "reason"

    @property
    def smtp(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


STARTTLS_FIRST = Reply(530, "5.7.0", "Must issue a STARTTLS command first", "starttls_required")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication failed", "auth_failed")
IP_NOT_AUTHORIZED = Reply(535, "5.7.8", "IP not authorized", "ip_not_authorized")
# The password was right (or the address, for SourceIP) and the account is switched off. RFC 5248's
# registry has exactly this: X.7.13 "User Account Disabled", "after a successful authentication to a
# disabled account", permanent until an administrator re-enables it, with the basic code 525. 535 5.7.8
# would tell the app its password is wrong, sending its owner to rotate a password that works.
CREDENTIAL_SUSPENDED = Reply(525, "5.7.13", "Credential suspended (SmtpCredential spec.suspended), ask the "
                             "cluster's administrators", "credential_suspended")
SENDER_DOMAIN = Reply(550, "5.7.1", "[ACL] Sender domain not authorized", "sender_domain")
HEADER_DOMAIN = Reply(550, "5.7.1", "From/Sender header not authorized", "header_domain")
NULL_SENDER = Reply(550, "5.7.1", "Null sender <> not allowed for this credential (allowNullSender)",
                    "null_sender")
FROM_COUNT = Reply(550, "5.6.0", "Message must have exactly one From header", "from_count")
SENDER_COUNT = Reply(550, "5.6.0", "Message must have at most one Sender header", "sender_count")
HEADER_ADDRESS = Reply(550, "5.6.0", "From/Sender header has no valid address", "header_address")
SUPPRESSED = Reply(550, "5.7.1", "Recipient is on the cluster's suppression list (kubectl mta suppressions)",
                   "suppressed")
QUOTA = Reply(452, "4.7.1", "Quota exceeded, try again later", "quota")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required", "auth_required")
AUTH_THROTTLED = Reply(421, "4.7.0", "Too many failed authentications, closing connection", "auth_throttled")
SPOOL_FAILED = Reply(452, "4.3.1", "Insufficient system storage, try again later", "spool")

SPF_TEMPFAIL = Reply(451, "4.4.3", "Sender domain SPF lookup failed, try again later", "spf_tempfail")
TOO_MANY_RCPTS = Reply(452, "4.5.3", "Too many recipients, send the rest in another transaction",
                       "too_many_recipients")
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8", "needs_smtputf8")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit", "too_big")
BARE_LINE_END = Reply(521, "5.5.2", "Bare CR or LF (or NUL) received, end every line with CRLF "
                      "(curl: --crlf), closing connection", "bare_line_end")
# Never sent (the client is speaking TLS, it could not read a reply): the log line's text and reason.
TLS_ON_STARTTLS_PORT = Reply(421, "4.7.0", "TLS handshake on a STARTTLS port: connect to the implicit "
                             "TLS port or send STARTTLS first, closing connection", "tls_on_starttls_port")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections from your address", "connection_limit")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try another server", "shutting_down")
INTERNAL = Reply(451, "4.3.0", "Internal error, try again later", "internal")
BAD_MESSAGE = Reply(550, "5.6.0", "Message is not valid RFC 5322", "bad_message")

# Protocol refusals: what aiosmtpd would have said in its own words, said with enhanced codes.
COMMAND_TOO_LONG = Reply(500, "5.5.2", "Command line too long", "command_too_long")
BAD_SYNTAX = Reply(500, "5.5.2", "Syntax error: empty or non-ASCII command", "bad_syntax")
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command not recognized", "unknown_command")
TOO_MANY_UNKNOWN = Reply(502, "5.5.1", "Too many unrecognized commands, closing connection",
                         "too_many_unknown_commands")
EHLO_FIRST = Reply(503, "5.5.1", "Send EHLO first", "ehlo_first")
EHLO_SYNTAX = Reply(501, "5.5.4", "Syntax: EHLO hostname", "bad_arguments")
NO_ARGUMENTS = Reply(501, "5.5.4", "This command takes no arguments", "bad_arguments")
AUTH_AFTER_HELO = Reply(503, "5.5.1", "AUTH needs EHLO, not HELO", "bad_sequence")
ALREADY_AUTHENTICATED = Reply(503, "5.5.1", "Already authenticated", "bad_sequence")
AUTH_SYNTAX = Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]", "bad_arguments")
AUTH_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication mechanism, see EHLO for those offered",
                       "auth_mechanism")
AUTH_ENCRYPTION = Reply(538, "5.7.11", "Encryption required for authentication, send STARTTLS first",
                        "starttls_required")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted", "auth_aborted")
AUTH_BASE64 = Reply(501, "5.5.2", "Cannot decode base64, send the response base64-encoded", "auth_syntax")
AUTH_PLAIN_SPLIT = Reply(501, "5.5.2", "AUTH PLAIN response must be authzid NUL login NUL password",
                         "auth_syntax")
CRAM_MD5_NO_INITIAL = Reply(501, "5.5.4", "CRAM-MD5 takes no initial response", "auth_syntax")
# aiosmtpd's "454 TLS not available" comes only where the listener has no STARTTLS: the implicit TLS ports
TLS_ACTIVE = Reply(554, "5.5.1", "TLS already active on this port", "bad_sequence")
TLS_REFUSED = Reply(554, "5.7.0", "Command refused: TLS handshake not accepted", "tls_refused")
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME] [SMTPUTF8]",
                    "bad_arguments")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>", "bad_arguments")
MALFORMED_ADDRESS = Reply(553, "5.1.3", "Malformed address, expected <local@domain>", "malformed_address")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already given, send RSET to start a new transaction",
                    "bad_sequence")
MAIL_FIRST = Reply(503, "5.5.1", "Send MAIL FROM first", "bad_sequence")
RCPT_FIRST = Reply(503, "5.5.1", "Send RCPT TO first, at least one recipient is needed", "bad_sequence")
BODY_PARAMETER = Reply(501, "5.5.4", "BODY must be 7BIT or 8BITMIME", "bad_arguments")
SMTPUTF8_PARAMETER = Reply(501, "5.5.4", "SMTPUTF8 takes no value", "bad_arguments")
MAIL_PARAMETERS = Reply(555, "5.5.4", "Unsupported MAIL FROM parameter, supported: SIZE, BODY, SMTPUTF8",
                        "bad_arguments")
RCPT_PARAMETERS = Reply(555, "5.5.4", "RCPT TO takes no parameters here", "bad_arguments")
LINE_TOO_LONG = Reply(500, "5.6.0", "Message line longer than 998 octets, encode the body (quoted-printable "
                      "or base64)", "line_too_long")
NOT_SUPPORTED = Reply(502, "5.5.1", "Command not supported", "not_supported")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY <address>", "bad_arguments")
HELP_TOPIC = Reply(501, "5.5.4", "No help on that, HELP lists the commands", "bad_arguments")
