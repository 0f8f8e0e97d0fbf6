#!/usr/bin/env python3
"""Runs AWS's own SAM translator (the library `sam deploy` runs) on the deployment template,
as `sam package` would hand it over: every function's CodeUri an S3 URI. Writes the
CloudFormation it produces as JSON, or exits non-zero with the translator's message, so a
template that lints clean but would not deploy fails the test command.

Usage: sam-transform.py TEMPLATE OUTPUT.json
"""
import json
import os
import sys

from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse

# `sam package` uploads the artifact and writes its S3 location in place of the local path.
PACKAGED_CODE_URI = "s3://golf-coach-artifacts/coach-api/bootstrap.zip"


class NoManagedPolicies:
    """The template names no AWS managed policy by name, so the translator needs no IAM call."""

    def load(self):
        return {}


def packaged(template):
    globals_fn = template.get("Globals", {}).get("Function", {})
    if "CodeUri" in globals_fn:
        globals_fn["CodeUri"] = PACKAGED_CODE_URI
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function" and "CodeUri" in resource.get("Properties", {}):
            resource["Properties"]["CodeUri"] = PACKAGED_CODE_URI
    return template


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    source, output = sys.argv[1], sys.argv[2]
    # The translator builds ARNs for the deployment's partition from the region.
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(source, encoding="utf-8") as f:
        template = packaged(yaml_parse(f.read()))
    try:
        cfn = transform(template, {}, NoManagedPolicies())
    except InvalidDocumentException as e:
        causes = "; ".join(str(c) for c in e.causes)
        sys.exit(f"SAM transform of {source} failed: {causes}")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(cfn, f, indent=1, sort_keys=True)
    print(f"SAM transform: {len(cfn.get('Resources', {}))} CloudFormation resources -> {output}")


if __name__ == "__main__":
    main()
