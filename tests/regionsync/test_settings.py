import subprocess
import sys

import orjson
import pytest
from pydantic import ValidationError

from regionsync.errors import ConfigError
from regionsync.settings import Settings


def test_secrets_are_masked_everywhere_they_are_shown() -> None:
    s = Settings(pg_password="hunter2-very-secret", milvus_token="tok-123456", s3_secret_access_key="s3-abcdef")
    shown = repr(s) + str(s.public_dict()) + s.pg_dsn_masked()
    for secret in ("hunter2-very-secret", "tok-123456", "s3-abcdef"):
        assert secret not in shown
    assert "hunter2-very-secret" in s.pg_dsn()  # only the DSN handed to psycopg holds it


def test_environment_configures_everything_and_round_trips() -> None:
    env = {"REGIONSYNC_REGIONS": "east,north,west", "REGIONSYNC_MILVUS_URIS": "west=http://milvus-west:19530",
           "REGIONSYNC_TEXT_COLUMNS": "title,body", "REGIONSYNC_PG_PASSWORD": "p@ss/word"}
    s = Settings(**{k.removeprefix("REGIONSYNC_").lower(): v for k, v in env.items()})  # type: ignore[arg-type]
    assert s.regions == ["east", "north", "west"]
    assert s.milvus_uri("west") == "http://milvus-west:19530"
    assert s.milvus_uri("north") == f"http://127.0.0.1:{s.milvus_base_port + 1}"
    assert s.text_columns == ["title", "body"]
    assert "p%40ss%2Fword" in s.pg_dsn()
    again = subprocess.run(
        [sys.executable, "-c", "from regionsync.settings import Settings; s = Settings(); "
         "print(s.regions, s.milvus_uris, s.pg_password.get_secret_value(), s.state_dir)"],
        env=s.child_env(), capture_output=True, text=True, check=True,
    ).stdout
    assert "['east', 'north', 'west']" in again and "p@ss/word" in again and str(s.state_dir) in again


def test_settings_cli_masks_secrets() -> None:
    env = Settings(pg_password="do-not-print-me").child_env()
    out = subprocess.run([sys.executable, "-m", "cli", "settings"], env=env, capture_output=True,
                         text=True, check=True)
    assert "do-not-print-me" not in out.stdout + out.stderr
    assert '"pg_password": "***"' in out.stdout


# ---------------------------------------------------------------------------- regions

def _three(**overrides: object) -> Settings:
    values: dict[str, object] = dict(regions=["east", "north", "west"], kafka_bootstrap="127.0.0.1:19092",
                                     pg_host="127.0.0.1", pg_port=55432, s3_endpoint="http://127.0.0.1:19000")
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def test_every_regions_addresses_are_filled_at_construction_from_the_sources() -> None:
    s = _three()
    assert s.source_region == "east"  # the first region unless told
    assert s.kafka_bootstraps == {"east": "127.0.0.1:19092", "north": "127.0.0.1:19093", "west": "127.0.0.1:19094"}
    assert s.pg_addresses == {"east": "127.0.0.1:55432", "north": "127.0.0.1:55433", "west": "127.0.0.1:55434"}
    # Object stores sit S3_PORT_STRIDE apart: each opens that many ports.
    assert s.s3_endpoints == {"east": "http://127.0.0.1:19000", "north": "http://127.0.0.1:19010",
                              "west": "http://127.0.0.1:19020"}
    assert {r: s.milvus_uri(r) for r in s.regions} == {r: f"http://127.0.0.1:{s.milvus_base_port + i}"
                                                       for i, r in enumerate(s.regions)}
    assert {r: s.serve_url(r) for r in s.regions} == {r: f"http://127.0.0.1:{s.serve_base_port + i}"
                                                      for i, r in enumerate(s.regions)}

    # The flat values are the source region's, wherever it is in the list; the others shift from it.
    north = _three(source_region="north")
    assert north.kafka_bootstraps == {"east": "127.0.0.1:19091", "north": "127.0.0.1:19092", "west": "127.0.0.1:19093"}
    assert north.s3_endpoints["east"] == "http://127.0.0.1:18990"

    # A region named in a map keeps its address (another host in production); the rest are filled.
    given = _three(kafka_bootstraps="west=kafka-west:9092", pg_addresses={"north": "pg-north:5432"},
                   s3_endpoints="east=https://s3.east.example", serve_urls="north=https://north.example",
                   milvus_uris="west=http://milvus-west:19530")
    assert given.kafka_bootstraps == {"east": "127.0.0.1:19092", "north": "127.0.0.1:19093", "west": "kafka-west:9092"}
    assert given.pg_addresses["north"] == "pg-north:5432" and given.pg_addresses["west"] == "127.0.0.1:55434"
    assert given.s3_endpoints["east"] == "https://s3.east.example"
    assert given.serve_url("north") == "https://north.example" and given.milvus_uri("west") == "http://milvus-west:19530"


def test_for_region_makes_the_flat_values_that_regions_own() -> None:
    s = _three(source_region="north")
    west = s.for_region("west")
    assert (west.kafka_bootstrap, f"{west.pg_host}:{west.pg_port}", west.s3_endpoint) == (
        s.kafka_bootstraps["west"], s.pg_addresses["west"], s.s3_endpoints["west"])
    assert west.pg_dsn("dialog_west").endswith(f"@{s.pg_addresses['west']}/dialog_west")
    # Nothing else moves: the maps, the source region, every other setting.
    assert west.kafka_bootstraps == s.kafka_bootstraps and west.source_region == "north"
    assert west.model_copy(update={"kafka_bootstrap": s.kafka_bootstrap, "pg_port": s.pg_port,
                                   "s3_endpoint": s.s3_endpoint}) == s
    assert west.for_region("west") == west  # idempotent
    assert west.source() == s.source() == s.for_region("north") == s  # the flat values were the source's
    assert west.others("west") == ["east", "north"] and s.others("north") == ["east", "west"]
    assert s.mirror_pairs() == [(a, b) for a in s.regions for b in s.regions if a != b] and len(s.mirror_pairs()) == 6
    with pytest.raises(ConfigError, match="unknown region 'south'"):
        s.for_region("south")
    with pytest.raises(ConfigError, match="unknown region"):
        s.others("south")


def test_the_region_maps_round_trip_through_a_child_processs_environment() -> None:
    s = _three(source_region="north", kafka_bootstraps="west=kafka-west:9092",
               serve_urls={"east": "https://east.example"}, milvus_uris={"west": "http://milvus-west:19530"})
    for parent in (s, s.for_region("west")):  # a worker in a region gets its region's settings
        child = subprocess.run(
            [sys.executable, "-c", "import orjson; from regionsync.settings import Settings; s = Settings(); "
             "print(orjson.dumps({'regions': s.regions, 'source': s.source_region, 'flat': s.kafka_bootstrap, "
             "'pg': [s.pg_host, s.pg_port], 's3': s.s3_endpoint, 'kafka': s.kafka_bootstraps, "
             "'pgs': s.pg_addresses, 's3s': s.s3_endpoints, 'serve': s.serve_urls, 'milvus': s.milvus_uris}).decode())"],
            env=parent.child_env(), capture_output=True, text=True, check=True,
        ).stdout
        got = orjson.loads(child)
        assert got == {"regions": parent.regions, "source": "north", "flat": parent.kafka_bootstrap,
                       "pg": [parent.pg_host, parent.pg_port], "s3": parent.s3_endpoint,
                       "kafka": parent.kafka_bootstraps, "pgs": parent.pg_addresses, "s3s": parent.s3_endpoints,
                       "serve": parent.serve_urls, "milvus": parent.milvus_uris}


@pytest.mark.parametrize(("values", "why"), [
    ({"regions": "east,north.x"}, "no '.'"),  # the name prefixes replicated topics: "north.x.topic" is ambiguous
    ({"regions": "east,no rth"}, "use letters"),
    ({"regions": ["east", "x" * 41]}, "at most 40"),
    ({"regions": "east,north,east"}, "repeat"),
    ({"regions": ""}, "at least one region"),
    ({"regions": "east,north", "source_region": "west"}, "source_region 'west' is not one of the regions"),
])
def test_bad_region_names_are_refused(values: dict[str, object], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(**values)  # type: ignore[arg-type]
