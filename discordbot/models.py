"""Image generations requested in Discord. Each one's cost is a `generate` ledger debit on its account."""

from django.db import models
from django.db.models import Q


class Generation(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUNDED = "refunded", "Refunded"

    # Statuses whose credit is still in flight: refunded at start-up and by the sweep if left behind.
    IN_FLIGHT = (Status.QUEUED, Status.RUNNING)

    account = models.ForeignKey("vouchers.CreditAccount", on_delete=models.PROTECT, related_name="generations")
    prompt = models.TextField()
    size = models.CharField(max_length=16, blank=True)
    quality = models.CharField(max_length=16, blank=True)
    model = models.CharField(max_length=64, blank=True)
    cost = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED, db_index=True)
    error = models.TextField(blank=True)
    interaction_id = models.BigIntegerField(null=True, blank=True)
    channel_id = models.BigIntegerField(null=True, blank=True)
    message_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(cost__gt=0), name="generation_cost_positive"),
        ]

    def __str__(self) -> str:
        return f"Generation #{self.pk} ({self.status})"
