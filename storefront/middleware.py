"""Middleware of the storefront's own."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from storefront.views import healthz


class HealthCheckMiddleware:
    """Answer `/healthz` before host validation and the HTTPS redirect.

    Load balancers and the ECS container health check call it by IP address over plain HTTP, which
    ALLOWED_HOSTS and SECURE_SSL_REDIRECT would otherwise refuse (400) or redirect (301), marking a healthy
    container unhealthy. It reveals nothing but whether the database answers.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == "/healthz" and request.method in ("GET", "HEAD"):
            return healthz(request)
        return self.get_response(request)


class BrandedErrorMiddleware:
    """Give the bare 405 that `require_POST` and friends answer with a page a person can use.

    Only empty 405s of non-admin pages, and only with DEBUG off (as Django does for its own 404/500 pages); the
    `Allow` header is kept. The webhook endpoint's 405 stays bare: it is for Stripe, not people.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code != 405 or response.content or settings.DEBUG:
            return response
        if request.path.startswith(("/admin/", "/stripe/")):
            return response
        branded = render(request, "405.html", status=405)
        if response.has_header("Allow"):
            branded["Allow"] = response["Allow"]
        return branded
