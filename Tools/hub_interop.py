"""By-hand check that `amused download` and huggingface_hub agree on the Hugging Face cache (no network: a stand-in hub
on loopback serves a local diffusers folder with the hub's endpoints, as the Swift tests' LocalHub does).

    Tools/.venv/bin/python Tools/hub_interop.py [--model FOLDER] [--amused .build/release/amused]

1. `amused download` fills cache A from the stand-in (HF_ENDPOINT); huggingface_hub's `snapshot_download` fills cache B
   from the same stand-in. The two caches must hold the same refs, the same blob names and bytes, and the same
   snapshot links (relative, into ../../blobs/<etag>) for the files both chose.
2. Offline (HF_HUB_OFFLINE=1), huggingface_hub resolves cache A and diffusers' AmusedPipeline.from_pretrained loads it.
Prints what it compared; exits 1 on any difference.
"""
import argparse
import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading

REPO = "someone/tiny"
COMMIT = "ab12" * 10


def serve(folder):
    files = {}
    for root, _, names in os.walk(folder):
        for n in names:
            full = os.path.join(root, n)
            files[os.path.relpath(full, folder)] = open(full, "rb").read()

    def etag(path):
        data = files[path]
        if path.endswith(".safetensors"):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def send(self, status, body=b"", headers=None, head=False):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def route(self, head):
            path = self.path.split("?")[0]
            api = f"/api/models/{REPO}/revision/"
            if path.startswith(api):
                body = json.dumps({"id": REPO, "sha": COMMIT, "siblings": [{"rfilename": p} for p in sorted(files)]})
                return self.send(200, body.encode(), {"Content-Type": "application/json"}, head)
            resolve = f"/{REPO}/resolve/"
            if path.startswith(resolve):
                rev, _, name = path[len(resolve):].partition("/")
                if rev not in ("main", COMMIT) or name not in files:
                    return self.send(404, b"Entry not found", head=head)
                headers = {"X-Repo-Commit": COMMIT}
                if name.endswith(".safetensors"):
                    headers.update({"Location": f"http://127.0.0.1:{port}/cdn/{etag(name)}",
                                    "X-Linked-Etag": f'"{etag(name)}"', "X-Linked-Size": str(len(files[name])),
                                    "ETag": '"git-pointer"'})
                    return self.send(302, b"", headers, head)
                headers["ETag"] = f'"{etag(name)}"'
                return self.send(200, files[name], headers, head)
            if path.startswith("/cdn/"):
                name = next((n for n in files if n.endswith(".safetensors") and etag(n) == path[5:]), None)
                if name is None:
                    return self.send(404, head=head)
                data, start = files[name], 0
                r = self.headers.get("Range")
                if r and r.startswith("bytes=") and r.endswith("-"):
                    start = int(r[6:-1])
                if start:
                    return self.send(206, data[start:], {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
                                     head)
                return self.send(200, data, head=head)
            self.send(404, head=head)

        def do_GET(self):
            self.route(False)

        def do_HEAD(self):
            self.route(True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{port}"


def tree(cache):
    """refs, blobs (name → sha256 of bytes) and snapshot links of REPO in `cache`."""
    repo = os.path.join(cache, "models--" + REPO.replace("/", "--"))
    refs = {n: open(os.path.join(repo, "refs", n)).read() for n in os.listdir(os.path.join(repo, "refs"))}
    blobs = {n: hashlib.sha256(open(os.path.join(repo, "blobs", n), "rb").read()).hexdigest()
             for n in os.listdir(os.path.join(repo, "blobs"))}
    links = {}
    snap = os.path.join(repo, "snapshots")
    for root, _, names in os.walk(snap):
        for n in names:
            full = os.path.join(root, n)
            links[os.path.relpath(full, snap)] = os.readlink(full)
    return refs, blobs, links


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="Fixtures/records/tiny-256/model")
    ap.add_argument("--amused", default=".build/release/amused")
    args = ap.parse_args()
    endpoint = serve(args.model)
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_CACHE=a)
        out = subprocess.run([args.amused, "download", REPO], env=env, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"amused download failed: {out.stderr}")
        print("amused download:", out.stdout.strip())
        code = ("import huggingface_hub; print(huggingface_hub.snapshot_download(%r, "
                "ignore_patterns=['*.fp16.safetensors']))" % REPO)
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, HF_HUB_CACHE=b), capture_output=True,
                             text=True)
        if out.returncode != 0:
            sys.exit(f"huggingface_hub snapshot_download failed: {out.stderr}")
        ours, theirs = tree(a), tree(b)
        failures = []
        for what, x, y in zip(["refs", "blobs", "snapshot links"], ours, theirs):
            if x != y:
                failures.append(f"{what} differ:\n  amused:          {x}\n  huggingface_hub: {y}")
            else:
                print(f"same {what}: {len(x)}")
        code = ("import huggingface_hub, diffusers; p = huggingface_hub.snapshot_download(%r); "
                "pipe = diffusers.AmusedPipeline.from_pretrained(%r); print(p, type(pipe).__name__)" % (REPO, REPO))
        out = subprocess.run([sys.executable, "-c", code], env=dict(env, HF_HUB_OFFLINE="1"), capture_output=True,
                             text=True)
        if out.returncode != 0:
            failures.append(f"offline huggingface_hub/diffusers on amused's cache failed: {out.stderr[-2000:]}")
        else:
            print("offline, from amused's cache:", out.stdout.strip())
        if failures:
            sys.exit("\n".join(failures))
        print("amused download and huggingface_hub agree")


if __name__ == "__main__":
    main()
