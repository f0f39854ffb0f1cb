"""Stream mode: follow progress over Server-Sent Events, then download.

NB_API_KEY=nb_... python examples/stream.py [OUT_DIR] [PROMPT]
"""

import json
import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import requests

BASE_URL = os.environ.get("NB_BASE_URL", "http://127.0.0.1:8000/api/v1")
API_KEY = os.environ["NB_API_KEY"]

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
prompt = sys.argv[2] if len(sys.argv) > 2 else "A cute orange cat sitting on a windowsill"

resp = requests.post(
    f"{BASE_URL}/generate",
    headers={"Authorization": f"Bearer {API_KEY}"},
    json={"prompt": prompt, "selectedModel": "nano-banana", "mode": "stream"},
    stream=True,
    timeout=300,
)
if resp.status_code != 200:
    sys.exit(f"Request failed ({resp.status_code}): {resp.json().get('error')}")

for line in resp.iter_lines():
    line = line.decode()
    if not line.startswith("data: "):
        continue  # blank separators and ": keep-alive" comments
    event = json.loads(line[6:])
    print(f"[{event['progress']:3}%] {event['type']}: {event['message']}")

    if event["type"] == "complete":
        data = event["data"]
        if not data["success"]:
            sys.exit(f"Generation finished without images: {event['message']}")
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, url in enumerate(data["imageUrls"]):
            ext = os.path.splitext(urlparse(url).path)[1]
            path = out_dir / f"{data['generationId']}_{i}{ext}"
            image = requests.get(url, timeout=60)
            image.raise_for_status()
            path.write_bytes(image.content)
            print(f"Saved {path}")
        print(f"Credits used: {data['creditsUsed']}, remaining: {data['remainingCredits']}")
        break
    if event["type"] == "error":
        sys.exit(f"Generation failed: {event.get('data', {}).get('error') or event['message']}")
else:
    sys.exit("The stream ended without a result")
