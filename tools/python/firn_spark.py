"""What the Spark check scripts share: the Iceberg runtime jar, a quiet local Spark session
with Iceberg REST catalogs pointed at Firn, and reporting (one JSON line per check)."""
import glob
import json
import os
import time

from pyspark.sql import SparkSession

SCALA = "2.12"  # the Scala version pyspark 3.5 is built with

CURRENT = {"check": "start"}
STARTED = time.time()


def iceberg_runtime_jar():
    """The Iceberg Spark runtime jar of the snowpark-connect-deps-iceberg package."""
    import snowpark_connect_deps_iceberg as deps

    jars = glob.glob(os.path.join(str(deps.get_jars_dir()), f"iceberg-spark-runtime-3.5_{SCALA}-*.jar"))
    if len(jars) != 1:
        raise SystemExit(f"expected one iceberg-spark-runtime-3.5_{SCALA} jar, found {jars}")
    return jars[0]


def emit(check, **facts):
    facts["elapsed_s"] = round(time.time() - STARTED, 1)
    print(json.dumps({"check": check, **facts}, default=str), flush=True)


def step(name):
    """Names the check under way, for the error line if it fails."""
    CURRENT["check"] = name


def error_line(e):
    """One line for a failed check: the Java exception's own message, not py4j's trace."""
    java = getattr(e, "java_exception", None)
    if java is not None:
        msg = java.toString()
        cause = java.getCause()
        while cause is not None:
            msg += " <- " + cause.toString()
            cause = cause.getCause()
    else:
        msg = f"{type(e).__name__}: {e}"
    return {"check": CURRENT["check"], "error": msg[:4000]}


def session(workdir, catalogs, default_catalog, java_options=""):
    """A local Spark session whose Iceberg REST catalogs are `catalogs` (name -> properties,
    e.g. {"firn": {"uri": ...}}); every statement loads tables afresh from Firn."""
    # Quiet: no banner, no per-stage progress, only errors from the JVM's logging.
    log4j = os.path.join(workdir, "log4j2.properties")
    with open(log4j, "w") as f:
        f.write("rootLogger.level = error\nrootLogger.appenderRef.stderr.ref = console\n"
                "appender.console.type = Console\nappender.console.name = console\n"
                "appender.console.target = SYSTEM_ERR\nappender.console.layout.type = PatternLayout\n"
                "appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n\n")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master("local[2]")
        .appName("firn-spark-check")
        .config("spark.jars", iceberg_runtime_jar())
        # C1 only and the serial collector: less compiling and GC work on 2 cores for a short run.
        .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{log4j} "
                f"-XX:TieredStopAtLevel=1 -XX:+UseSerialGC {java_options}")
        .config("spark.sql.extensions", "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions")
        .config("spark.sql.defaultCatalog", default_catalog)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.adaptive.enabled", "false")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", "1g")
    )
    for name, props in catalogs.items():
        builder = (builder.config(f"spark.sql.catalog.{name}", "org.apache.iceberg.spark.SparkCatalog")
                   .config(f"spark.sql.catalog.{name}.type", "rest")
                   # Every statement loads the table from Firn: no client cache hides the server's state.
                   .config(f"spark.sql.catalog.{name}.cache-enabled", "false"))
        for k, v in props.items():
            builder = builder.config(f"spark.sql.catalog.{name}.{k}", v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main(run):
    """Runs `run(workdir)` in a fresh directory: SPARK-OK when it returns; on an error its
    one JSON line, SPARK-FAILED and a non-zero exit."""
    import shutil
    import sys
    import tempfile
    import traceback

    workdir = tempfile.mkdtemp(prefix="firn-spark-")
    try:
        run(workdir)
    except Exception as e:  # noqa: BLE001 - reported as one line, then a non-zero exit
        traceback.print_exc(file=sys.stderr)
        print(json.dumps(error_line(e)), flush=True)
        print("SPARK-FAILED", flush=True)
        sys.exit(1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print("SPARK-OK", flush=True)
