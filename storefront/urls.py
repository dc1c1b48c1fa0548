"""URL map. Public paths are an interface (see DESIGN.md): keep them exactly."""

from django.conf import settings
from django.contrib import admin
from django.urls import path

from storefront import views

urlpatterns = [
    path("", views.pack_list, name="pack_list"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/success/", views.checkout_success, name="checkout_success"),
    path("checkout/cancel/", views.checkout_cancel, name="checkout_cancel"),
    # The built-in test-mode checkout page; answers 404 unless PAYMENTS_BACKEND=test and DEBUG is on.
    path("checkout/test/<str:session_id>/", views.checkout_test, name="checkout_test"),
    path("stripe/webhook/", views.stripe_webhook, name="stripe_webhook"),
    path("terms/", views.legal_page, {"kind": "terms"}, name="terms"),
    path("privacy/", views.legal_page, {"kind": "privacy"}, name="privacy"),
    path("refunds/", views.legal_page, {"kind": "refunds"}, name="refunds"),
    path("gallery/<int:pk>/<str:digest>/", views.gallery_image, name="gallery_image"),
    path("healthz", views.healthz, name="healthz"),
    # ADMIN_URL (default "admin/") keeps the operators' pages off the well-known path when set.
    path(settings.ADMIN_URL, admin.site.urls),
]

# Branded error pages (DEBUG off). 404 and 403 (CSRF) use templates/404.html and 403_csrf.html directly;
# 405 is rendered by storefront.middleware.BrandedErrorMiddleware.
handler500 = "storefront.views.server_error"
