"""Spark with OAuth2 client credentials (and TLS) against a Firn server that requires
authentication.

Usage: spark_auth_check.py REST_URI WRITER_CREDENTIAL READER_CREDENTIAL NS TABLE [CA_CERT]

TABLE has the columns (id BIGINT, name STRING, ts TIMESTAMP).

Each CREDENTIAL is CLIENT_ID:CLIENT_SECRET, which Iceberg's REST client exchanges at
/v1/oauth/tokens. The writer's catalog inserts 2 rows; the reader's catalog reads them,
then tries to insert and must be refused (ForbiddenException); a wrong secret is refused
at sign-in. With CA_CERT (PEM), the JVM trusts it (a PKCS12 trust store made with keytool)
and REST_URI is https. Prints one JSON line per check, then SPARK-OK.
"""
import os
import shutil
import subprocess
import sys

import firn_spark
from firn_spark import emit, session, step


def trust_store(workdir, ca_pem):
    """JVM options that trust `ca_pem`, through a PKCS12 store keytool makes."""
    keytool = shutil.which("keytool")
    if keytool is None and os.environ.get("JAVA_HOME"):
        keytool = os.path.join(os.environ["JAVA_HOME"], "bin", "keytool")
    store = os.path.join(workdir, "trust.p12")
    subprocess.run([keytool, "-importcert", "-noprompt", "-alias", "firn-ca", "-file", ca_pem,
                    "-keystore", store, "-storetype", "PKCS12", "-storepass", "changeit"],
                   check=True, capture_output=True)
    return (f"-Djavax.net.ssl.trustStore={store} -Djavax.net.ssl.trustStorePassword=changeit "
            "-Djavax.net.ssl.trustStoreType=PKCS12")


def run(workdir):
    uri, writer, reader, ns, table = sys.argv[1:6]
    java = trust_store(workdir, sys.argv[6]) if len(sys.argv) > 6 else ""

    def catalog(credential):
        return {"uri": uri, "credential": credential, "scope": "catalog",
                "oauth2-server-uri": f"{uri}/v1/oauth/tokens"}

    step("spark_session")
    bad = writer.split(":")[0] + ":firn_wrong"
    spark = session(workdir, {"w": catalog(writer), "r": catalog(reader), "bad": catalog(bad)},
                    "w", java)
    try:
        def count(cat):
            return spark.sql(f"SELECT count(*) FROM {cat}.{ns}.{table}").collect()[0][0]

        step("writer")
        before = count("w")
        spark.sql(f"INSERT INTO w.{ns}.{table} VALUES (200, 'spark', NULL), (201, 'spark', NULL)")
        after = count("w")
        emit("writer", before=before, after=after)

        step("reader")
        seen = count("r")
        try:
            spark.sql(f"INSERT INTO r.{ns}.{table} VALUES (300, 'denied', NULL)")
            denied = "no"
        except Exception as e:  # noqa: BLE001 - the refusal is what is checked
            denied = firn_spark.error_line(e)["error"]
        emit("reader", saw=seen, insert=denied, after_denied=count("w"))

        step("bad_secret")
        try:
            spark.sql("SHOW NAMESPACES IN bad").collect()
            bad_secret = "accepted"
        except Exception as e:  # noqa: BLE001
            bad_secret = "refused: " + firn_spark.error_line(e)["error"]
        emit("bad_secret", result=bad_secret)
    finally:
        spark.stop()


if __name__ == "__main__":
    firn_spark.main(run)
