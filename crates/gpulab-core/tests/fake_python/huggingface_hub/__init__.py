"""A fake Hub client: FAKE_HUB=offline fails as huggingface_hub does without network or cache."""
import os


class LocalEntryNotFoundError(Exception):
    pass


def snapshot_download(repo_id, **kwargs):
    if os.environ.get("FAKE_HUB") == "offline":
        raise LocalEntryNotFoundError(
            "An error happened while trying to locate the files on the Hub and we cannot find the "
            "appropriate snapshot folder for the specified revision on the local disk."
        )
    return "/nonexistent/fake-snapshot/" + repo_id
