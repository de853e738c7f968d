"""Security settings: Redis AUTH/TLS and Kafka SASL/SSL, their checks, and no secret in logs."""

import logging
import ssl

import faust
import pytest

from streams.ops.connections import (
    faust_credentials,
    kafka_client_options,
    redis_client,
    redis_options,
)
from streams.ops.settings import Settings, SettingsError, load_settings, redacted_url

REDIS_PW = "r3dis-Pw-7f1c"
KAFKA_PW = "k4fka-Pw-92ab"


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env
    for name in ("REDIS", "REDIS_PASSWORD", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                 "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "API_CORS_ORIGINS"):
        monkeypatch.delenv(f"RANKFLOW_{name}", raising=False)
    return monkeypatch


def test_defaults_are_plaintext_without_secrets(clean_env):
    s = Settings()
    assert s.kafka_security_protocol == "PLAINTEXT" and s.kafka_sasl_mechanism == "PLAIN"
    assert s.redis_password is None and s.kafka_sasl_password is None
    assert s.cors_origins == []
    assert kafka_client_options(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None
    secured = {"password", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
    assert not secured & redis_options(s).keys()


@pytest.mark.parametrize("url,shown", [
    ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
    ("redis://user:p%40ss@h:6379/0", "redis://user:***@h:6379/0"),
    ("rediss://h:6380/0?password=pw&db=1", "rediss://h:6380/0?password=***&db=1"),
    ("unix://:pw@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_redacted_url(url, shown):
    assert redacted_url(url) == shown


def test_secrets_appear_in_no_log_and_no_repr(clean_env, caplog):
    clean_env.setenv("RANKFLOW_REDIS", f"redis://:{REDIS_PW}@127.0.0.1:6379/0")
    clean_env.setenv("RANKFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("RANKFLOW_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    clean_env.setenv("RANKFLOW_KAFKA_SASL_USERNAME", "rankflow")
    clean_env.setenv("RANKFLOW_KAFKA_SASL_PASSWORD", KAFKA_PW)
    settings = load_settings()
    # the clients get the secrets ...
    assert kafka_client_options(settings)["sasl_plain_password"] == KAFKA_PW
    assert redis_client(settings).connection_pool.connection_kwargs["password"] == REDIS_PW
    # ... and nothing printable shows them
    from streams.kafka.app import create_app

    wiring = create_app(settings)
    credentials = wiring.app.conf.broker_credentials
    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.password == KAFKA_PW and credentials.mechanism.value == "SCRAM-SHA-512"
    with caplog.at_level(logging.DEBUG):
        log = logging.getLogger("rankflow.test")
        log.info("settings: %s", settings)
        log.info("settings: %r", settings)
        log.info("credentials: %r %s", credentials, credentials)
        log.info("redis: %s", redacted_url(settings.redis))
    printed = "\n".join([caplog.text, str(settings), repr(settings), str(credentials),
                         repr(wiring.app.conf.broker_credentials)])
    assert "rankflow" in printed and ":***@" in printed
    assert REDIS_PW not in printed and KAFKA_PW not in printed


def test_a_bad_setting_never_echoes_a_secret(clean_env):
    clean_env.setenv("RANKFLOW_REDIS", f"http://:{REDIS_PW}@127.0.0.1:6379/0")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "RANKFLOW_REDIS" in str(info.value) and REDIS_PW not in str(info.value)


def test_password_from_the_setting(clean_env):
    clean_env.setenv("RANKFLOW_REDIS_PASSWORD", REDIS_PW)
    settings = load_settings()
    assert REDIS_PW not in repr(settings)
    assert redis_options(settings)["password"] == REDIS_PW
    client = redis_client(settings, asyncio=False, blocking=True, max_connections=2)
    assert client.connection_pool.connection_kwargs["password"] == REDIS_PW


def test_kafka_options_per_protocol(clean_env):
    sasl = Settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="u",
                    kafka_sasl_password=KAFKA_PW)
    assert kafka_client_options(sasl) == {
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u", "sasl_plain_password": KAFKA_PW}
    creds = faust_credentials(sasl)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_PLAINTEXT"
    tls = Settings(kafka_security_protocol="SSL")
    options = kafka_client_options(tls)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert isinstance(faust_credentials(tls), faust.SSLCredentials)
    sasl_ssl = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u",
                        kafka_sasl_password=KAFKA_PW, kafka_sasl_mechanism="SCRAM-SHA-256")
    creds = faust_credentials(sasl_ssl)
    assert isinstance(creds, faust.SASLCredentials) and creds.protocol.value == "SASL_SSL"
    assert kafka_client_options(sasl_ssl)["sasl_mechanism"] == "SCRAM-SHA-256"


def test_redis_tls_files_go_to_rediss_clients(clean_env, tmp_path):
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-")
    settings = Settings(redis="rediss://127.0.0.1:6380/0", redis_tls_ca_file=tmp_path / "ca.pem",
                        redis_tls_cert_file=tmp_path / "cert.pem",
                        redis_tls_key_file=tmp_path / "key.pem")
    tls = {k: v for k, v in redis_options(settings).items() if k.startswith("ssl_")}
    assert tls == {"ssl_ca_certs": str(tmp_path / "ca.pem"),
                   "ssl_certfile": str(tmp_path / "cert.pem"),
                   "ssl_keyfile": str(tmp_path / "key.pem")}


@pytest.mark.parametrize("env,named", [
    ({"RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_TLS"}, "RANKFLOW_KAFKA_SECURITY_PROTOCOL"),
    ({"RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "RANKFLOW_KAFKA_SASL_MECHANISM": "MD5",
      "RANKFLOW_KAFKA_SASL_USERNAME": "u", "RANKFLOW_KAFKA_SASL_PASSWORD": "p"},
     "RANKFLOW_KAFKA_SASL_MECHANISM"),
    ({"RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "RANKFLOW_KAFKA_SASL_USERNAME"),
    ({"RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "RANKFLOW_KAFKA_SASL_USERNAME": "u"},
     "RANKFLOW_KAFKA_SASL_PASSWORD"),
    ({"RANKFLOW_KAFKA_SASL_USERNAME": "u", "RANKFLOW_KAFKA_SASL_PASSWORD": "p"},
     "RANKFLOW_KAFKA_SECURITY_PROTOCOL"),
    ({"RANKFLOW_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256"}, "RANKFLOW_KAFKA_SASL_MECHANISM"),
    ({"RANKFLOW_KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem",
      "RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"}, "RANKFLOW_KAFKA_SSL_CA_FILE"),
    ({"RANKFLOW_KAFKA_SSL_CA_FILE": "{tmp}/f.pem"}, "RANKFLOW_KAFKA_SECURITY_PROTOCOL"),
    ({"RANKFLOW_KAFKA_SSL_KEY_FILE": "{tmp}/f.pem", "RANKFLOW_KAFKA_SECURITY_PROTOCOL": "SSL"},
     "RANKFLOW_KAFKA_SSL_CERT_FILE"),
    ({"RANKFLOW_REDIS_TLS_CA_FILE": "{tmp}/f.pem"}, "RANKFLOW_REDIS_TLS_CA_FILE"),
    ({"RANKFLOW_REDIS": "rediss://h:6380/0", "RANKFLOW_REDIS_TLS_KEY_FILE": "{tmp}/f.pem"},
     "RANKFLOW_REDIS_TLS_CERT_FILE"),
    ({"RANKFLOW_REDIS": "redis://:a@h:6379/0", "RANKFLOW_REDIS_PASSWORD": "b"},
     "RANKFLOW_REDIS_PASSWORD"),
    ({"RANKFLOW_API_CORS_ORIGINS": "*"}, "RANKFLOW_API_CORS_ORIGINS"),
    ({"RANKFLOW_API_CORS_ORIGINS": "https://ok.example,example.org"}, "RANKFLOW_API_CORS_ORIGINS"),
])
def test_bad_security_settings_stop_start_up(clean_env, tmp_path, env, named):
    (tmp_path / "f.pem").write_text("-")
    for name, value in env.items():
        clean_env.setenv(name, value.replace("{tmp}", str(tmp_path)))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)


def test_cors_origins_list(clean_env):
    clean_env.setenv("RANKFLOW_API_CORS_ORIGINS", " https://a.example , http://localhost:3000 ")
    assert load_settings().cors_origins == ["https://a.example", "http://localhost:3000"]


def test_log_records_are_redacted(caplog):
    from streams.ops.cli import redact_logs

    previous = logging.getLogRecordFactory()
    try:
        redact_logs((KAFKA_PW, "q'x9z"))
        with caplog.at_level(logging.DEBUG):
            log = logging.getLogger("aiokafka.conn")
            log.debug("Request: SaslAuthenticateRequest(auth_bytes=%r)",
                      f"\x00rankflow\x00{KAFKA_PW}".encode())
            log.info("a password with a quote: %r", "q'x9z")
            try:
                raise RuntimeError(f"failed with {KAFKA_PW}")
            except RuntimeError:
                log.exception("it broke")
            log.info("bad %d format", "x")
    finally:
        logging.setLogRecordFactory(previous)
    assert "rankflow" in caplog.text and "it broke" in caplog.text and "***" in caplog.text
    assert KAFKA_PW not in caplog.text and "x9z" not in caplog.text
    # formatted once, args emptied: a formatter that formats the args again (faust's
    # does) finds nothing to format
    assert all(record.args == () for record in caplog.records)
