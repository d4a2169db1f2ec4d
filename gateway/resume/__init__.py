"""Resumable streams (issue 14): a dropped stream's events kept, for any instance to replay."""
