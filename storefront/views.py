"""Storefront views. Placeholder home until the shop lands; `/healthz` answers 200 when the database does."""

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


def healthz(request: HttpRequest) -> HttpResponse:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "unhealthy"; details stay in the logs
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
