from __future__ import annotations

from django.db import models


class Signup(models.Model):
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)


class WelcomeEmail(models.Model):
    """What the ``send_welcome`` handler "sent": one row per job run."""

    job_id = models.BigIntegerField()
    signup = models.ForeignKey(Signup, on_delete=models.CASCADE, related_name="welcome_emails")
    worker_pid = models.IntegerField()
    sent_at = models.DateTimeField(auto_now_add=True)
