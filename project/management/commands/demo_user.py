"""Create (or reset) the demo user and print its credentials."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chatauth.models import Profile

USERNAME, PASSWORD = "demo", "demo-password-123"


class Command(BaseCommand):
    help = "Create the demo user (demo / demo-password-123), a staff superuser."

    def add_arguments(self, parser):
        parser.add_argument(
            "--host", default="127.0.0.1", help="where the demo runs (printed)"
        )
        parser.add_argument("--port", type=int, default=8000, help="its port (printed)")

    def handle(self, *args, **options):
        User = get_user_model()
        user, _ = User.objects.get_or_create(username=USERNAME)
        user.set_password(PASSWORD)
        user.is_staff = user.is_superuser = True
        user.save()
        Profile.objects.update_or_create(
            user=user,
            defaults={"display_name": "Demo User", "metadata": {"plan": "demo"}},
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo user: {USERNAME} / {PASSWORD}  (also an admin at /admin/)\n"
                f"Open http://{options['host']}:{options['port']}/"
            )
        )
