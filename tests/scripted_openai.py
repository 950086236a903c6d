#!/usr/bin/env python3
"""A scripted OpenAI-compatible Chat Completions server for end-to-end tests.

It speaks the real wire format (POST /v1/chat/completions with tools, tool_calls,
usage with prompt_tokens_details.cached_tokens) and plays the three-agent demo: the
orchestrator delegates with send_message, the specialists call their real tools, and
each answer is built from the tool results it was sent back. Every request body is
appended to --log as one JSON line, so a test can count requests and check them.

    python3 tests/scripted_openai.py --port-file PORT --log REQUESTS.jsonl

It listens on a free loopback port, writes the port to --port-file, and exits when its
standard input closes (so it never outlives the test that started it).
"""

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Billed per call: what the test expects the task's usage to add up to.
USAGE = {
    "prompt_tokens": 120,
    "completion_tokens": 30,
    "total_tokens": 150,
    "prompt_tokens_details": {"cached_tokens": 64},
}


def agent_of(body):
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    for name in ("primary", "weather", "finance"):
        if f"You are the agent `{name}`" in system:
            return name
    return "unknown"


def tool_results(body):
    """The tool messages after the last assistant turn, in order."""
    out = []
    for m in reversed(body["messages"]):
        if m["role"] == "tool":
            out.append(m["content"])
        elif m["role"] == "assistant":
            break
    return list(reversed(out))


def call(call_id, name, args):
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(args)},
    }


def respond(body):
    agent = agent_of(body)
    last = body["messages"][-1]
    if last["role"] == "tool":
        results = tool_results(body)
        if agent == "primary":
            text = "Here is what my agents found:\n- weather: {}\n- finance: {}".format(*results)
        else:
            text = " ".join(results)
        return {"role": "assistant", "content": text}, "stop"
    if agent == "primary":
        calls = [
            call("call_w", "send_message", {"agent": "weather", "request": "What's the weather in Paris and Tokyo?"}),
            call("call_f", "send_message", {"agent": "finance", "request": "What is 1250 EUR in USD?"}),
        ]
    elif agent == "weather":
        calls = [call("call_p", "get_weather", {"city": "Paris"}), call("call_t", "get_weather", {"city": "Tokyo"})]
    elif agent == "finance":
        calls = [call("call_c", "convert_currency", {"amount": 1250, "from": "EUR", "to": "USD"})]
    else:
        return {"role": "assistant", "content": "I do not know this agent."}, "stop"
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length))
        with self.server.lock:
            self.server.count += 1
            n = self.server.count
            with open(self.server.log, "a") as f:
                f.write(json.dumps({"path": self.path, "auth": self.headers.get("authorization"), "body": body}) + "\n")
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self.send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            return
        message, finish = respond(body)
        self.send_json(200, {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "model": body.get("model", "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": USAGE,
        })

    def send_json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port-file", required=True)
    p.add_argument("--log", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.lock = threading.Lock()
    server.count = 0
    server.log = a.log
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    import os
    os.replace(a.port_file + ".tmp", a.port_file)
    sys.stdin.read()  # until the parent closes our stdin (or dies)
    server.shutdown()


if __name__ == "__main__":
    main()
