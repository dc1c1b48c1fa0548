"""The real URL map plus one page that always fails, to see the 500 page a buyer gets (tests only)."""

from django.urls import path

from storefront.urls import handler500  # noqa: F401 - handler500 is read by Django
from storefront.urls import urlpatterns as real_urlpatterns


def broken(request):
    raise RuntimeError("a bug in a view (tests only)")


urlpatterns = [path("broken/", broken), *real_urlpatterns]
