"""Write a ghz/grpcurl JSON body carrying image files as base64 (AddImages, AddImagesStream)."""

import argparse
import base64
import json
import os

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("images", nargs="+", help="image files")
parser.add_argument("--stream", action="store_true",
                    help="a JSON array of ImageItem (AddImagesStream) instead of AddImagesRequest")
args = parser.parse_args()
items = [{"key": os.path.basename(path),
          "image": base64.b64encode(open(path, "rb").read()).decode()} for path in args.images]
print(json.dumps(items if args.stream else {"items": items}))
