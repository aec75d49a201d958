"""A fake Hugging Face Hub: a real HTTP server on 127.0.0.1 for testing push code without network.

It answers the calls that `HfApi.create_repo`, `HfApi.upload_folder` / `create_commit`, `RepoCard.push_to_hub`
and `Dataset.push_to_hub` make: preupload (text files in "regular" mode, inlined in the commit; binary files such
as parquet shards and safetensors through the LFS batch API with the "basic" transfer), commit, tree and
paths-info listings, and file downloads. It keeps the committed files of every repo and records every request.

Point a client at it with the real environment variables, in a fresh process (`huggingface_hub` reads them at
import); `HF_HUB_DISABLE_XET=1` makes binary uploads take the LFS route instead of Xet storage::

    with FakeHub() as hub:
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake", "HF_HUB_DISABLE_XET": "1"}
        subprocess.run([...], env=env, check=True)
        hub.repos["dataset", "user/name"].files["README.md"]
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".png")


@dataclass
class Commit:
    """One commit: what it added (path -> bytes) and deleted, in the order the client sent them."""

    oid: str
    summary: str
    added: dict[str, bytes]
    deleted: list[str]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1].oid if self.commits else "0" * 40


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes


def _upload_mode(path: str) -> str:
    return "lfs" if path.endswith(LFS_SUFFIXES) else "regular"


def _oid(content: bytes) -> str:
    """The git blob id the Hub reports for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """The fake Hub's state and its server; use as a context manager."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.lfs_objects: dict[str, bytes] = {}  # sha256 -> content
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def commits(self, repo_type: str, repo_id: str) -> list[Commit]:
        return self.repos[repo_type, repo_id].commits


def _handler_for(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = -1  # headers and body leave in one write, flushed after each request
        disable_nagle_algorithm = True

        def log_message(self, *args):  # keep test output quiet
            pass

        # Plumbing ---------------------------------------------------------------------------------

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # http.server headers ignore case
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
            if body is None:
                body = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json" if payload is not None else "application/octet-stream")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _not_found(self, what: str):
            code = "RepoNotFound" if what == "repo" else "EntryNotFound"
            self._send(404, {"error": f"{what} not found"}, headers={"X-Error-Code": code})

        def _handle(self):
            url = urlsplit(self.path)
            body = self._body() if self.command in ("POST", "PUT", "DELETE") else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            request = Request(self.command, unquote(url.path), parse_qs(url.query), headers, body)
            with hub._lock:
                hub.requests.append(request)
                for pattern, method, route in ROUTES:
                    match = re.fullmatch(pattern, request.path)
                    if match and method == self.command.replace("HEAD", "GET"):
                        return route(self, request, **match.groupdict())
            self._send(404, {"error": f"no route for {self.command} {request.path}"})

        do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle

        def _repo(self, repo_type: str, repo_id: str) -> Repo | None:
            return hub.repos.get((REPO_TYPES.get(repo_type, repo_type), repo_id))

        # Routes -----------------------------------------------------------------------------------

        def create_repo(self, request: Request):
            payload = json.loads(request.body)
            repo_type = payload.get("type") or "model"
            repo_id = (
                f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
            )
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{hub.url}/{prefix}{repo_id}"
            if (repo_type, repo_id) in hub.repos:
                return self._send(409, {"error": "You already created this repo", "url": url})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            hub.repos[repo_type, repo_id] = Repo(repo_type, repo_id, private=private)
            self._send(200, {"url": url, "name": repo_id})

        def validate_yaml(self, request: Request):
            content = json.loads(request.body)["content"]
            if content.startswith("---"):
                try:
                    yaml.safe_load(content.split("---", 2)[1])
                except yaml.YAMLError as error:
                    return self._send(400, body=str(error).encode())
            self._send(200, {})

        def repo_info(self, request: Request, repo_type: str, repo_id: str, revision: str = "main"):
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._not_found("repo")
            siblings = [{"rfilename": path} for path in sorted(repo.files)]
            self._send(200, {"id": repo_id, "sha": repo.sha, "private": repo.private, "siblings": siblings})

        def preupload(self, request: Request, repo_type: str, repo_id: str, revision: str):
            if self._repo(repo_type, repo_id) is None:
                return self._not_found("repo")
            files = json.loads(request.body)["files"]
            modes = [
                {"path": f["path"], "uploadMode": _upload_mode(f["path"]), "shouldIgnore": False, "oid": None}
                for f in files
            ]
            self._send(200, {"files": modes})

        def lfs_batch(self, request: Request, repo_type: str | None, repo_id: str):
            objects = []
            for obj in json.loads(request.body)["objects"]:
                entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
                if obj["oid"] not in hub.lfs_objects:
                    entry["actions"] = {"upload": {"href": f"{hub.url}/lfs/{obj['oid']}"}}
                objects.append(entry)
            self._send(200, {"transfer": "basic", "objects": objects})

        def lfs_upload(self, request: Request, oid: str):
            if hashlib.sha256(request.body).hexdigest() != oid:
                return self._send(400, {"error": "sha256 of the body does not match the object id"})
            hub.lfs_objects[oid] = request.body
            self._send(200, {})

        def commit(self, request: Request, repo_type: str, repo_id: str, revision: str):
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._not_found("repo")
            lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
            header = lines[0]["value"]
            if header.get("parentCommit") not in (None, repo.sha):
                return self._send(412, {"error": "parent commit is not the head of the branch"})
            added, deleted = {}, []
            for line in lines[1:]:
                if line["key"] == "file":
                    added[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                elif line["key"] == "lfsFile":
                    if line["value"]["oid"] not in hub.lfs_objects:
                        return self._send(400, {"error": f"LFS object of {line['value']['path']} was never uploaded"})
                    added[line["value"]["path"]] = hub.lfs_objects[line["value"]["oid"]]
                elif line["key"] in ("deletedFile", "deletedFolder"):
                    deleted.append(line["value"]["path"])
                else:
                    return self._send(400, {"error": f"the fake Hub does not take {line['key']!r} operations"})
            for path in deleted:
                for existing in [p for p in repo.files if p == path or p.startswith(path.rstrip("/") + "/")]:
                    del repo.files[existing]
            repo.files.update(added)
            oid = hashlib.sha1(f"{repo.sha}{len(repo.commits)}{sorted(added)}".encode()).hexdigest()
            repo.commits.append(Commit(oid, header["summary"], added, deleted))
            prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
            self._send(200, {"commitUrl": f"{hub.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid})

        def _entries(self, repo: Repo, folder: str, recursive: bool) -> list[dict]:
            folder = folder.strip("/")
            prefix = f"{folder}/" if folder else ""
            entries, folders = [], set()
            for path, content in sorted(repo.files.items()):
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix) :]
                if "/" in rest and not recursive:
                    folders.add(prefix + rest.split("/")[0])
                    continue
                if recursive:
                    parts = rest.split("/")[:-1]
                    folders.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
                entries.append({"type": "file", "path": path, "size": len(content), "oid": _oid(content)})
            entries += [{"type": "directory", "path": f, "oid": "0" * 40, "size": 0} for f in sorted(folders)]
            return entries

        def tree(self, request: Request, repo_type: str, repo_id: str, revision: str, path: str | None):
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._not_found("repo")
            path = (path or "").strip("/")
            if path and not any(p.startswith(path + "/") for p in repo.files):
                return self._not_found("entry")
            recursive = request.query.get("recursive", ["false"])[0].lower() == "true"
            self._send(200, self._entries(repo, path, recursive))

        def paths_info(self, request: Request, repo_type: str, repo_id: str, revision: str):
            repo = self._repo(repo_type, repo_id)
            if repo is None:
                return self._not_found("repo")
            if request.headers.get("content-type", "").startswith("application/json"):
                paths = json.loads(request.body).get("paths", [])
            else:
                paths = parse_qs(request.body.decode()).get("paths", [])
            entries = []
            for path in paths:
                path = path.strip("/")
                if path in repo.files:
                    content = repo.files[path]
                    entries.append({"type": "file", "path": path, "size": len(content), "oid": _oid(content)})
                elif any(p.startswith(path + "/") for p in repo.files):
                    entries.append({"type": "directory", "path": path, "oid": "0" * 40, "size": 0})
            self._send(200, entries)

        def resolve(self, request: Request, repo_type: str, repo_id: str, revision: str, path: str):
            repo = self._repo(repo_type or "models", repo_id)
            if repo is None:
                return self._not_found("repo")
            if path not in repo.files:
                return self._not_found("entry")
            content = repo.files[path]
            headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{_oid(content)}"'}
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
            if ranged:
                start = int(ranged.group(1))
                end = int(ranged.group(2)) if ranged.group(2) else len(content) - 1
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
                return self._send(206, headers=headers, body=content[start : end + 1])
            self._send(200, headers=headers, body=content)

    repo = r"(?P<repo_type>models|datasets|spaces)/(?P<repo_id>[^/]+/[^/]+|[^/]+)"
    ROUTES = [
        (r"/api/repos/create", "POST", Handler.create_repo),
        (r"/api/validate-yaml", "POST", Handler.validate_yaml),
        (rf"/api/{repo}/preupload/(?P<revision>[^/]+)", "POST", Handler.preupload),
        (rf"/api/{repo}/commit/(?P<revision>[^/]+)", "POST", Handler.commit),
        (rf"/api/{repo}/paths-info/(?P<revision>[^/]+)", "POST", Handler.paths_info),
        (rf"/api/{repo}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?", "GET", Handler.tree),
        (rf"/api/{repo}/revision/(?P<revision>[^/]+)", "GET", Handler.repo_info),
        (rf"/api/{repo}", "GET", Handler.repo_info),
        (
            r"/(?:(?P<repo_type>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+?|[^/]+?)\.git/info/lfs/objects/batch",
            "POST",
            Handler.lfs_batch,
        ),
        (r"/lfs/(?P<oid>[0-9a-f]{64})", "PUT", Handler.lfs_upload),
        (
            r"/(?:(?P<repo_type>datasets|spaces)/)?(?P<repo_id>[^/]+/[^/]+|[^/]+)/resolve/(?P<revision>[^/]+)/(?P<path>.+)",
            "GET",
            Handler.resolve,
        ),
    ]
    return Handler
