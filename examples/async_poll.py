"""Async mode: submit, poll GET /generate?id=... until done, then download.

NB_API_KEY=nb_... python examples/async_poll.py [OUT_DIR] [PROMPT] [QUANTITY]
"""

import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

BASE_URL = os.environ.get("NB_BASE_URL", "http://127.0.0.1:8000/api/v1")
API_KEY = os.environ["NB_API_KEY"]
HEADERS = {"Authorization": f"Bearer {API_KEY}"}

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
prompt = sys.argv[2] if len(sys.argv) > 2 else "A cute orange cat sitting on a windowsill"
quantity = int(sys.argv[3]) if len(sys.argv) > 3 else 1

resp = requests.post(
    f"{BASE_URL}/generate",
    headers=HEADERS,
    json={"prompt": prompt, "selectedModel": "nano-banana", "quantity": quantity, "mode": "async"},
    timeout=30,
)
result = resp.json()
if not result.get("success"):
    sys.exit(f"Request failed ({resp.status_code}): {result.get('error')}")
generation_id = result["generationId"]
print(f"Started {generation_id} (credits used: {result['creditsUsed']})")

while True:
    poll = requests.get(
        f"{BASE_URL}/generate", headers=HEADERS, params={"id": generation_id}, timeout=30
    )
    poll.raise_for_status()
    record = poll.json()["data"]
    print(f"Status: {record['processingStatus']}")
    if record["processingStatus"] in ("completed", "failed"):
        break
    time.sleep(1)

if record["processingStatus"] == "failed":
    sys.exit(f"Generation failed: {record.get('errorMessage')}")

out_dir.mkdir(parents=True, exist_ok=True)
for i, url in enumerate(record["outputImageUrls"]):
    ext = os.path.splitext(urlparse(url).path)[1]
    path = out_dir / f"{generation_id}_{i}{ext}"
    image = requests.get(url, timeout=60)
    image.raise_for_status()
    path.write_bytes(image.content)
    print(f"Saved {path}")
