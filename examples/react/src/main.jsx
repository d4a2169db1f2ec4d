import { createRoot } from "react-dom/client";
import { Chat } from "./Chat.jsx";
import "./chat.css";

// ?gateway=http://127.0.0.1:8080&model=demo/echo, else VITE_GATEWAY_URL at build time, else the defaults.
const params = new URLSearchParams(window.location.search);
const gateway = (params.get("gateway") ?? import.meta.env.VITE_GATEWAY_URL ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
const model = params.get("model") ?? "demo/echo";

createRoot(document.getElementById("root")).render(<Chat gateway={gateway} model={model} />);
