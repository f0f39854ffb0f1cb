"""Sync mode: wait for the images, then download them.

NB_API_KEY=nb_... python examples/sync.py [OUT_DIR] [PROMPT] [QUANTITY]
"""

import os
import sys
from pathlib import Path
from urllib.parse import urlparse

import requests

BASE_URL = os.environ.get("NB_BASE_URL", "http://127.0.0.1:8000/api/v1")
API_KEY = os.environ["NB_API_KEY"]

out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "out")
prompt = sys.argv[2] if len(sys.argv) > 2 else "A cute orange cat sitting on a windowsill"
quantity = int(sys.argv[3]) if len(sys.argv) > 3 else 1

resp = requests.post(
    f"{BASE_URL}/generate",
    headers={"Authorization": f"Bearer {API_KEY}"},
    json={"prompt": prompt, "selectedModel": "nano-banana", "quantity": quantity},
    timeout=300,
)
result = resp.json()
if not result.get("success"):
    sys.exit(f"Generation failed: {result.get('error') or result.get('message')}")

print(f"Credits used: {result['creditsUsed']}, remaining: {result['remainingCredits']}")
out_dir.mkdir(parents=True, exist_ok=True)
for i, url in enumerate(result["imageUrls"]):
    ext = os.path.splitext(urlparse(url).path)[1]
    path = out_dir / f"{result['generationId']}_{i}{ext}"
    image = requests.get(url, timeout=60)
    image.raise_for_status()
    path.write_bytes(image.content)
    print(f"Saved {path}")
