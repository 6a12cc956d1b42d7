"""Sets up a moto server started with INITIAL_NO_AUTH_ACTION_COUNT=4, so that every request
after these four is authenticated and its SigV4 signature checked: an IAM user allowed all
of S3, its access key, and a bucket.

Usage: moto_iam.py ENDPOINT BUCKET
Prints one JSON line: {"access_key_id": ..., "secret_access_key": ...}.
"""
import json
import sys

import boto3

endpoint, bucket = sys.argv[1:3]
# The four unauthenticated actions (the keys below are placeholders moto ignores for them).
session = boto3.session.Session(
    aws_access_key_id="setup", aws_secret_access_key="setup", region_name="us-east-1"
)
iam = session.client("iam", endpoint_url=endpoint)
iam.create_user(UserName="firn")
iam.put_user_policy(
    UserName="firn",
    PolicyName="s3",
    PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }),
)
key = iam.create_access_key(UserName="firn")["AccessKey"]
session.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
print(json.dumps({
    "access_key_id": key["AccessKeyId"],
    "secret_access_key": key["SecretAccessKey"],
}))
